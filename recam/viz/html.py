"""The `visualize` stage's index page: one HTML string, sections of captioned pictures."""

from __future__ import annotations

import html
from dataclasses import dataclass, field


@dataclass
class Section:
    """A heading, a short text, and pictures as (relative path, caption) pairs."""

    title: str
    text: str = ""
    pictures: list[tuple[str, str]] = field(default_factory=list)


# Pictures are shown at their own size (never shrunk to the page, which would shrink their captions
# below legibility); a picture wider than the page scrolls inside its figure.
STYLE = (
    "body{font-family:sans-serif;margin:1.5em;max-width:1600px} img{image-rendering:pixelated;"
    "max-width:none;border:1px solid #ccc} figure{display:inline-block;margin:0 1em 1em 0;"
    "vertical-align:top;max-width:100%;overflow-x:auto} figcaption{font-size:.85em;color:#333}"
)


def index_page(title: str, intro: str, sections: list[Section]) -> str:
    """A self-contained page (no scripts, no external files besides the pictures); text is escaped."""
    parts = [
        f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p>{html.escape(intro)}</p>",
    ]
    for section in sections:
        parts.append(f"<h2 id='{html.escape(section.title)}'>{html.escape(section.title)}</h2>")
        if section.text:
            parts.append(f"<p>{html.escape(section.text)}</p>")
        for path, text in section.pictures:
            parts.append(
                f"<figure><a href='{html.escape(path)}'><img src='{html.escape(path)}' "
                f"alt='{html.escape(text)}'></a><figcaption>{html.escape(text)}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)

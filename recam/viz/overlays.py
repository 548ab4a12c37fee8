"""Heat maps, label maps and gradients as RGB pictures: uint8 (H, W, 3) arrays, no file IO.

`jet` is the classic JET colour map (blue -> cyan -> yellow -> red), written out here so that the
package does not need matplotlib or OpenCV: each channel is the piecewise-linear ramp
clip(1.5 - |4v - c|, 0, 1) with c = 3 (red), 2 (green), 1 (blue), the usual closed form of
MATLAB's / OpenCV's JET.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from recam.io import VOC_PALETTE

VOC_COLOURS = np.asarray(VOC_PALETTE, dtype=np.uint8).reshape(256, 3)


def jet(values: np.ndarray) -> np.ndarray:
    """JET colours of `values` in [0, 1] (clipped): (...) float -> (..., 3) uint8."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)[..., None]
    centres = np.array([3.0, 2.0, 1.0], dtype=np.float32)
    return np.round(255 * np.clip(1.5 - np.abs(4 * v - centres), 0.0, 1.0)).astype(np.uint8)


def overlay(image: np.ndarray, heat: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    """`image` (H, W, 3) uint8 blended with the JET colours of `heat` (H, W) in [0, 1]:
    (1 - alpha) * image + alpha * jet(heat)."""
    if image.shape[:2] != heat.shape:
        raise ValueError(f"image {image.shape[:2]} and heat map {heat.shape} differ in size")
    blend = (1 - alpha) * image.astype(np.float32) + alpha * jet(heat).astype(np.float32)
    return np.round(blend).astype(np.uint8)


def colorize_labels(label: np.ndarray) -> np.ndarray:
    """A label map (H, W) of 0..255 (255 = ignore) in the VOC palette: (H, W, 3) uint8."""
    return VOC_COLOURS[np.asarray(label, dtype=np.uint8)]


def gradient_image(gradient: np.ndarray) -> np.ndarray:
    """A signed input gradient (3, H, W) as a picture: 0.5 + 0.5 * g / max|g| -> (H, W, 3) uint8
    (grey = 0; an all-zero gradient is plain grey)."""
    g = np.asarray(gradient, dtype=np.float32).transpose(1, 2, 0)
    scale = float(np.abs(g).max())
    g = 0.5 + 0.5 * g / scale if scale > 0 else np.full_like(g, 0.5)
    return np.round(255 * np.clip(g, 0.0, 1.0)).astype(np.uint8)


def grey_to_rgb(values: np.ndarray) -> np.ndarray:
    """(H, W) values in [0, 1] -> (H, W, 3) uint8 grey."""
    grey = np.round(255 * np.clip(np.asarray(values, dtype=np.float32), 0.0, 1.0)).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=-1)


def upscale(image: np.ndarray, factor: int) -> np.ndarray:
    """Nearest-neighbour enlargement by an integer factor (small images stay crisp)."""
    if factor <= 1:
        return image
    return np.repeat(np.repeat(image, factor, axis=0), factor, axis=1)


# Captions, tick labels and the legend are drawn at this size in the final picture's pixels (after
# `display_scale`): 16 px is a browser's default text size (capitals 11 px, ascender to descender 15 px).
FONT_SIZE = 16
IGNORE = 255  # the label maps' "ignore" value (VOC's object boundaries, unsure seed pixels)
WHITE = (255, 255, 255)


@functools.lru_cache(maxsize=8)
def text_font(size: int = FONT_SIZE) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """PIL's bundled scalable font (Aileron, Pillow >= 10.1 with FreeType) at `size` pixels; without
    FreeType, PIL's fixed 11 px bitmap font."""
    return ImageFont.load_default(size=size)


def text_band_height(size: int = FONT_SIZE) -> int:
    """Height in pixels of one line of text at `size`, with its margins (the caption band)."""
    return text_font(size).getbbox("Agjy|")[3] + 2 * text_margin(size)


def text_margin(size: int = FONT_SIZE) -> int:
    return max(2, size // 6)


def text_width(text: str, size: int = FONT_SIZE) -> int:
    """Width in pixels of `text` on one line at `size`, with its margins."""
    return math.ceil(text_font(size).getlength(text)) + 2 * text_margin(size)


def text_picture(text: str, size: int = FONT_SIZE, width: int = 0) -> np.ndarray:
    """`text` in black on one white line, at least `width` wide and as wide as the text needs:
    (text_band_height(size), W, 3) uint8. Never clipped, wrapped or abbreviated."""
    margin = text_margin(size)
    band = Image.new("RGB", (max(width, text_width(text, size)), text_band_height(size)), WHITE)
    ImageDraw.Draw(band).text((margin, margin), text, fill=(0, 0, 0), font=text_font(size))
    return np.asarray(band, dtype=np.uint8)


def pad_to(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """`image` (h, w, 3) on a white (height, width, 3) canvas, at the top left (h <= height, w <= width)."""
    canvas = np.full((height, width, 3), 255, dtype=np.uint8)
    canvas[: image.shape[0], : image.shape[1]] = image
    return canvas


def caption(image: np.ndarray, text: str, size: int = FONT_SIZE) -> np.ndarray:
    """`image` below a white band holding `text` at `size` pixels; where the text is wider than the
    image, the picture widens (white on the right) instead of cutting the text."""
    band = text_picture(text, size, width=image.shape[1])
    return np.concatenate([band, pad_to(image, image.shape[0], band.shape[1])], axis=0)


def colour_bar(width: int, size: int = FONT_SIZE, ticks: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)) -> np.ndarray:
    """The JET scale of `jet` from 0 (left) to 1 (right) as a strip `width` pixels long, with tick
    marks and their values below: (h, W, 3) uint8, W = width plus room for the end labels."""
    labels = [f"{t:g}" for t in ticks]
    margin = max(text_width(label, size) for label in labels) // 2 + 1
    strip = np.repeat(jet(np.linspace(0.0, 1.0, width))[None], size, axis=0)  # (size, width, 3)
    band = text_band_height(size)
    picture = Image.new("RGB", (width + 2 * margin, size + 4 + band), WHITE)
    picture.paste(Image.fromarray(strip), (margin, 0))
    draw = ImageDraw.Draw(picture)
    for tick, label in zip(ticks, labels):
        x = margin + round(tick * (width - 1))
        draw.line([(x, size), (x, size + 3)], fill=(0, 0, 0))
        half = (text_width(label, size) - 2 * text_margin(size)) / 2
        draw.text((x - half, size + 4), label, fill=(0, 0, 0), font=text_font(size))
    return np.asarray(picture, dtype=np.uint8)


def legend_rows(class_names: list[str], ignore: bool = False) -> list[tuple[int, str, tuple[int, int, int]]]:
    """The palette's entries of a label map: (value, name, RGB colour) for background (0), each class
    (1..K, `class_names` in order, 0-based class k is value k + 1) and, with `ignore`, 255."""
    values = [(0, "background"), *((k + 1, name) for k, name in enumerate(class_names))]
    if ignore:
        values.append((IGNORE, "ignore"))
    return [(value, name, tuple(int(c) for c in VOC_COLOURS[value])) for value, name in values]


def legend_picture(
    rows: list[tuple[int, str, tuple[int, int, int]]], size: int = FONT_SIZE, per_column: int = 8
) -> np.ndarray:
    """`legend_rows` as a picture: per entry a colour swatch (grey outline) and "value name", in
    columns of `per_column` entries: (H, W, 3) uint8."""
    band = text_band_height(size)
    swatch = band - 4
    entries = []
    for value, name, colour in rows:
        text = text_picture(f"{value} {name}", size)
        cell = np.full((band, swatch + 4 + text.shape[1], 3), 255, dtype=np.uint8)
        cell[2 : 2 + swatch, 2 : 2 + swatch] = (128, 128, 128)
        cell[3 : 1 + swatch, 3 : 1 + swatch] = colour
        cell[:, swatch + 4 :] = text
        entries.append(cell)
    columns = [entries[i : i + per_column] for i in range(0, len(entries), per_column)]
    widths = [max(c.shape[1] for c in column) for column in columns]
    canvas = np.full((min(len(entries), per_column) * band, sum(widths) + 8 * (len(columns) - 1), 3), 255, np.uint8)
    x = 0
    for column, wide in zip(columns, widths):
        for r, cell in enumerate(column):
            canvas[r * band : (r + 1) * band, x : x + cell.shape[1]] = cell
        x += wide + 8
    return canvas


def outline(mask: np.ndarray) -> np.ndarray:
    """The boundary of a boolean mask (H, W): its pixels with a 4-neighbour outside it (or the border)."""
    mask = np.asarray(mask, dtype=bool)
    inner = np.pad(mask, 1, constant_values=False)
    inside = inner[:-2, 1:-1] & inner[2:, 1:-1] & inner[1:-1, :-2] & inner[1:-1, 2:]
    return mask & ~inside


def draw_box(image: np.ndarray, box: np.ndarray, colour: tuple[int, int, int], width: int = 1) -> np.ndarray:
    """A copy of `image` (H, W, 3) uint8 with the outline of an inclusive [x0, y0, x1, y1] box
    (clipped to the image), `width` pixels thick, drawn inwards."""
    out = image.copy()
    height, wide = out.shape[:2]
    x0, y0, x1, y1 = (int(v) for v in box)
    x0, x1 = max(0, min(x0, wide - 1)), max(0, min(x1, wide - 1))
    y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
    for t in range(width):
        out[min(y0 + t, y1), x0 : x1 + 1] = colour
        out[max(y1 - t, y0), x0 : x1 + 1] = colour
        out[y0 : y1 + 1, min(x0 + t, x1)] = colour
        out[y0 : y1 + 1, max(x1 - t, x0)] = colour
    return out

"""Progress bars that stay readable when the output is a file.

On a terminal: tqdm as usual. Otherwise (a redirected log, CI, a SLURM job): one plain line per
update at most every `FILE_INTERVAL_S` seconds, without carriage returns, so `less` and `grep` read
the log. `close_all()` ends every open bar's line; the entry point calls it before an error line.
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

FILE_INTERVAL_S = 30.0


class _LineWriter:
    """A file for tqdm that turns its carriage-return refreshes into whole lines."""

    def __init__(self, stream: Any):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").rstrip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Any = None, **kwargs: Any) -> tqdm:
    """`tqdm(iterable, **kwargs)`, line-based when stderr is not a terminal."""
    stream = kwargs.pop("file", sys.stderr)
    if not getattr(stream, "isatty", lambda: False)():
        kwargs.setdefault("mininterval", FILE_INTERVAL_S)
        kwargs.setdefault("ncols", 100)
        kwargs["dynamic_ncols"] = False
        stream = _LineWriter(stream)
    return tqdm(iterable, file=stream, **kwargs)


def close_all() -> None:
    """Close every open bar, so the next line printed starts on a line of its own."""
    for bar in list(getattr(tqdm, "_instances", [])):
        bar.close()

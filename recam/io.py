"""Atomic writes and the readers/writers of every artifact format the pipeline uses.

All writes go to `<name>.<host>.<pid>.tmp` in the same folder and are moved into place with `os.replace`, so a
killed process never leaves a half-written file under the final name (timm's checkpoint saver does
the same). Formats are ones anyone can open: `.npz` (no pickle), palette PNG, JSON, markdown.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from recam.errors import RecamInputError


def _voc_palette() -> list[int]:
    """The standard VOC colour map: bits of the index interleaved into R, G, B at 128, 64, 32, ..."""
    palette = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette += [r, g, b]
    return palette


VOC_PALETTE: list[int] = _voc_palette()  # 768 ints; index 255 is (224, 224, 192) as in VOC PNGs


_HOST = socket.gethostname().replace(".", "-")  # in temporary names: a writer is (host, pid)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` via a temporary file + `os.replace` (creating parent folders).

    The old file (if any) stays intact until the new one is complete. A failed write (full disk,
    quota, permissions) removes the partial temporary file and raises one RecamInputError line;
    the temporary name carries the process id, so concurrent writers never share it.
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{_HOST}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise RecamInputError(
            f"recam: cannot write {path} ({err.strerror or err}) - free disk space or fix the "
            "folder's permissions and re-run: finished files are kept and the stage resumes"
        ) from err


def pid_alive(pid: int) -> bool:
    """Whether process `pid` of this host still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike, other_host_age_s: float = 3600.0) -> int:
    """Remove the `<name>.<host>.<pid>.tmp` files that a killed writer left under `folder`.

    A file of this host is stale when its process is gone; one of another host (a shard on another
    cluster node sharing the folder) when it has not been touched for `other_host_age_s`. Files of
    live writers are kept, so concurrent shards are safe. Returns the number removed.
    """
    removed = 0
    for tmp in Path(folder).rglob("*.tmp"):
        parts = tmp.name.rsplit(".", 3)  # name, host, pid, "tmp"
        if len(parts) != 4 or not parts[2].isdigit():
            continue
        host, pid = parts[1], int(parts[2])
        try:
            stale = (not pid_alive(pid)) if host == _HOST else time.time() - tmp.stat().st_mtime > other_host_age_s
            if stale:
                tmp.unlink()
                removed += 1
        except FileNotFoundError:  # its writer just finished or removed it
            continue
    return removed


def atomic_write_with(path: str | os.PathLike, write: Callable[[io.BytesIO], None]) -> None:
    """Serialise with `write(buffer)` into memory, then write the bytes atomically."""
    buffer = io.BytesIO()
    write(buffer)
    atomic_write_bytes(path, buffer.getvalue())


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: {path} does not exist")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RecamInputError(
            f"recam: {path} is not valid JSON ({err}); delete it and re-run the stage that wrote it"
        ) from err


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Save plain arrays to `.npz` (never pickled objects), atomically."""
    atomic_write_with(path, lambda buf: np.savez(buf, **{k: np.asarray(v) for k, v in arrays.items()}))


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Load every array of an `.npz` with pickling disabled; a bad file gets one clear line."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except Exception as err:  # zipfile/ValueError/OSError: the file is damaged
        raise RecamInputError(
            f"recam: {path} cannot be read as .npz ({err}); delete it and re-run the stage that wrote it"
        ) from err


def save_label_png(path: str | os.PathLike, label: np.ndarray, palette: bool = True) -> None:
    """Save a uint8 label map (0..N, 255 = ignore) as a PNG, atomically.

    With `palette=True` the PNG is a palette ('P') image in the VOC colours, so it is readable
    in any viewer and still stores the raw index values (reading it back gives the same array).
    """
    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {label.shape}")
    image = Image.fromarray(label.astype(np.uint8), mode="P" if palette else "L")
    if palette:
        image.putpalette(VOC_PALETTE)
    atomic_write_with(path, lambda buf: image.save(buf, format="PNG"))


def load_label_png(path: str | os.PathLike) -> np.ndarray:
    """Read a label PNG (palette or grey) as its raw uint8 index values (H, W)."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: label file {path} does not exist")
    try:
        with Image.open(path) as image:
            if image.mode not in ("P", "L"):
                raise RecamInputError(
                    f"recam: {path} is a {image.mode} image, not a single-channel label PNG (palette or grey)"
                )
            return np.array(image, dtype=np.uint8)
    except RecamInputError:
        raise
    except Exception as err:
        raise RecamInputError(f"recam: label file {path} cannot be read ({err})") from err


def load_rgb(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file as RGB uint8 (H, W, 3); a missing or corrupt file raises one clear line."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: image {path} does not exist")
    try:
        with Image.open(path) as image:
            image.load()  # truncated files fail here (PIL's LOAD_TRUNCATED_IMAGES stays off)
            return np.asarray(image.convert("RGB"), dtype=np.uint8)
    except Exception as err:
        raise RecamInputError(f"recam: image {path} is unreadable or corrupt ({err})") from err


def link_file(link: str | os.PathLike, target: str | os.PathLike) -> None:
    """Make `link` a symlink to `target` (absolute), atomically (temporary link + `os.replace`);
    nothing is written when it already points there. The VOC-layout views of dataset=coco14 and
    dataset=folder are made of these, so no image is copied."""
    link, target = Path(link), Path(target).resolve()
    if link.is_symlink() and Path(os.readlink(link)) == target:
        return
    tmp = link.with_name(f"{link.name}.{_HOST}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    os.symlink(target, tmp)
    os.replace(tmp, link)


def save_jpeg(path: str | os.PathLike, image: np.ndarray, quality: int = 95) -> None:
    pil = Image.fromarray(np.asarray(image, dtype=np.uint8), mode="RGB")
    atomic_write_with(path, lambda buf: pil.save(buf, format="JPEG", quality=quality))


def readable(path: str | os.PathLike) -> bool:
    """Whether a finished per-image artifact is there and loads completely (`.npz`: every array,
    which checks the zip CRCs; `.png`/`.jpg`: a full decode; `.json`: parses). A resumed stage
    redoes the files for which this is False, so a file damaged by a crash or a disk is not kept."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                for name in z.files:
                    z[name]
        elif path.suffix in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as image:
                image.verify()  # chunk CRCs (a PNG cut short can still decode)
            with Image.open(path) as image:
                image.load()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
        return True
    except Exception:  # any decoder error means the same here: the file must be made again
        return False


def fingerprint(path: str | os.PathLike) -> str:
    """Short sha256 of a file's bytes (used for `inputs.json`: what a stage was computed from)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured markdown table; floats with 4 decimals."""

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def update_json(path: str | os.PathLike, updates: Mapping[str, Any]) -> dict:
    """Read-modify-write a JSON dict atomically (used for `summary.json`)."""
    path = Path(path)
    data = read_json(path) if path.is_file() else {}
    data.update(updates)
    write_json(path, data)
    return data

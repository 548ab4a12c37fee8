"""Pictures side by side and feature-map grids: uint8 (H, W, 3) arrays, no file IO."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.utils import make_grid

from recam.cams.cam import normalize_max
from recam.viz.overlays import FONT_SIZE, caption, colour_bar, jet, outline, text_margin, upscale


def feature_grid(features: torch.Tensor, channels: int = 32, nrow: int = 8, padding: int = 1) -> np.ndarray:
    """The first `channels` maps of features (C, h, w), each min-max scaled on its own, in a grid of
    `nrow` columns with white separators (torchvision's make_grid): (H, W, 3) uint8."""
    maps = features[:channels].detach().float().cpu().unsqueeze(1)  # (N, 1, h, w)
    grid = make_grid(maps, nrow=nrow, padding=padding, normalize=True, scale_each=True, pad_value=1.0)
    return np.round(255 * grid.clamp(0, 1).permute(1, 2, 0).numpy()).astype(np.uint8)


def grid(rows: Sequence[Sequence[np.ndarray]], gap: int = 4) -> np.ndarray:
    """Pictures (H_i, W_i, 3) in rows (rows may differ in length) on white, `gap` pixels apart: each
    column as wide as its widest picture, each row as tall as its tallest; smaller pictures sit at
    the top left of their cell."""
    rows = [list(row) for row in rows if len(row)]
    if not rows:
        raise ValueError("grid needs at least one picture")
    heights = [max(cell.shape[0] for cell in row) for row in rows]
    widths = [max(row[c].shape[1] for row in rows if c < len(row)) for c in range(max(len(row) for row in rows))]
    canvas = np.full((sum(heights) + gap * (len(rows) - 1), sum(widths) + gap * (len(widths) - 1), 3), 255, np.uint8)
    y = 0
    for row, height in zip(rows, heights):
        x = 0
        for cell, width in zip(row, widths):
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
            x += width + gap
        y += height + gap
    return canvas


def tile(
    images: Sequence[np.ndarray],
    captions: Sequence[str] | None = None,
    gap: int = 4,
    columns: int | None = None,
    font_size: int = FONT_SIZE,
) -> np.ndarray:
    """Pictures (H_i, W_i, 3) in rows of `columns` (default: one row), each with its caption above
    (`font_size` pixels, whole: a caption wider than its picture widens the column), on white,
    `gap` pixels apart (see `grid`)."""
    if not images:
        raise ValueError("tile needs at least one picture")
    cells = [caption(im, text, font_size) for im, text in zip(images, captions)] if captions else list(images)
    columns = columns or len(cells)
    return grid([cells[i : i + columns] for i in range(0, len(cells), columns)], gap)


def same_scale(maps: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Heat maps of several methods (title -> (K, H, W) float, >= 0) on one scale: each class map
    divided by its own spatial max + 1e-5 (`normalize_max`, the seeds' normalisation, spec §4.3)
    and clipped to [0, 1], so a value means the same share of its map's peak in every method.
    Seed maps (already max-normalised) change only slightly: the seeds divide before cropping the
    stride padding (spec §4.3), so their max on the image can be just below 1."""
    return {
        title: normalize_max(torch.from_numpy(np.asarray(m, dtype=np.float32))).clamp(0, 1).numpy()
        for title, m in maps.items()
    }


def compare_maps(
    image: np.ndarray,
    maps: dict[str, np.ndarray],
    class_names: Sequence[str],
    masks: np.ndarray | None = None,
    scale: int = 1,
    font_size: int = FONT_SIZE,
) -> np.ndarray:
    """One row per class: the image, then each method's map of that class in JET, after
    `same_scale`, with the class's ground-truth outline in white; below, the one JET colour bar
    that every map is drawn with.

    image: (H, W, 3) uint8; maps: title -> (K, H, W) float >= 0, K = len(class_names), in the
    column order wanted; masks: (K, H, W) bool GT region of each class, or None. `scale`: the
    nearest-neighbour enlargement of every panel. Returns (H', W', 3) uint8."""
    scaled = same_scale(maps)
    cells, captions = [], []
    for k, name in enumerate(class_names):
        cells.append(upscale(image, scale))
        captions.append(name)
        for title, heat in scaled.items():
            picture = jet(heat[k])
            if masks is not None:
                picture[outline(masks[k])] = 255
            cells.append(upscale(picture, scale))
            captions.append(f"{title}: {name}")
    panels = tile(cells, captions, columns=1 + len(maps), font_size=font_size)
    bar_width = min(panels.shape[1], max(2 * image.shape[1] * scale, 160))
    title = "colour scale of every map: value / max of its map"
    bar = caption(colour_bar(bar_width, font_size), title, font_size)
    return grid([[panels], [bar]], gap=2 * text_margin(font_size))

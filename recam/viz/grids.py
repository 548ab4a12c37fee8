"""Pictures side by side and feature-map grids: uint8 (H, W, 3) arrays, no file IO."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchvision.utils import make_grid

from recam.viz.overlays import caption


def feature_grid(features: torch.Tensor, channels: int = 32, nrow: int = 8, padding: int = 1) -> np.ndarray:
    """The first `channels` maps of features (C, h, w), each min-max scaled on its own, in a grid of
    `nrow` columns with white separators (torchvision's make_grid): (H, W, 3) uint8."""
    maps = features[:channels].detach().float().cpu().unsqueeze(1)  # (N, 1, h, w)
    grid = make_grid(maps, nrow=nrow, padding=padding, normalize=True, scale_each=True, pad_value=1.0)
    return np.round(255 * grid.clamp(0, 1).permute(1, 2, 0).numpy()).astype(np.uint8)


def tile(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, gap: int = 4, columns: int | None = None
) -> np.ndarray:
    """Pictures (H_i, W_i, 3) in rows of `columns` (default: one row), each with its caption above,
    on white, `gap` pixels apart; smaller pictures are padded at the bottom and right."""
    if not images:
        raise ValueError("tile needs at least one picture")
    cells = [caption(im, text) for im, text in zip(images, captions)] if captions else list(images)
    columns = columns or len(cells)
    height = max(c.shape[0] for c in cells)
    width = max(c.shape[1] for c in cells)
    rows = [cells[i : i + columns] for i in range(0, len(cells), columns)]
    canvas = np.full((len(rows) * (height + gap) - gap, columns * (width + gap) - gap, 3), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, cell in enumerate(row):
            y, x = r * (height + gap), c * (width + gap)
            canvas[y : y + cell.shape[0], x : x + cell.shape[1]] = cell
    return canvas

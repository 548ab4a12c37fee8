"""Neighbour pairs and the straight paths between them on the stride-4 grid (spec §6b, "PathIndex").

IRN predicts the affinity of a pixel pair (p, p + d) from the largest boundary probability met
on the straight path from p to p + d. This module enumerates the offsets d (a forward
half-disc of radius r), the integer points of each path, and the flat grid indices those
points reach from every source pixel. Numpy in, numpy out; nothing here touches a device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PathIndex:
    """Directions, paths and flat grid indices for one radius and one grid size.

    radius: r, the search radius (pairs with dy^2 + dx^2 < r^2).
    radius_floor: rf = ceil(r) - 1, the margin kept free so that every destination stays in the grid.
    size: (H, W) of the grid; flat index of (y, x) is y * W + x.
    search_dst: (n_dirs, 2) int64 (dy, dx) of every direction, in channel order (grouped by path length).
    search_paths: per path-length group j, (n_j, L_j, 2) int64 path points (y, x), destination first.
    path_indices: per group j, (n_j, L_j, ch * cw) int64 flat indices of every source shifted by
        every path point, with (ch, cw) = (H - rf, W - 2 rf) the cropped source grid.
    src_indices: (ch * cw,) int64 flat indices of the sources grid[0:ch, rf:rf + cw].
    dst_indices: (n_dirs, ch * cw) int64 flat indices of the destinations, path_indices_j[:, 0]
        concatenated over groups.
    """

    radius: int
    radius_floor: int
    size: tuple[int, int]
    search_dst: np.ndarray
    search_paths: list[np.ndarray]
    path_indices: list[np.ndarray]
    src_indices: np.ndarray
    dst_indices: np.ndarray

    @property
    def n_dirs(self) -> int:
        """Number of directions (152 for r = 10, 34 for r = 5)."""
        return int(self.search_dst.shape[0])

    @property
    def cropped_size(self) -> tuple[int, int]:
        """(ch, cw) = (H - rf, W - 2 rf), the grid of sources."""
        return self.size[0] - self.radius_floor, self.size[1] - 2 * self.radius_floor


def search_directions(radius: int) -> list[tuple[int, int]]:
    """The forward half-disc of offsets, in the reference's enumeration order (spec §6b).

    (0, dx) for dx = 1 .. r-1, then (dy, dx) for dy = 1 .. r-1 (outer), dx = -(r-1) .. r-1
    (inner) with dy^2 + dx^2 < r^2. Only one of d and -d appears: an affinity is symmetric.
    """
    directions = [(0, dx) for dx in range(1, radius)]
    for dy in range(1, radius):
        for dx in range(-radius + 1, radius):
            if dx * dx + dy * dy < radius * radius:
                directions.append((dy, dx))
    return directions


def direction_path(dy: int, dx: int) -> np.ndarray:
    """Integer points of the straight path from (0, 0) to (dy, dx), destination first (spec §6b).

    The points of the closed box spanned by (0, 0) and (dy, dx) whose squared distance to the
    line through both, (dy x - dx y)^2 / (dy^2 + dx^2), is below 1. Enumerated y-major then x,
    then stably sorted by decreasing |y| + |x| (Python's sort is stable, as in the reference).
    Returns (L, 2) int64 (y, x).
    """
    length_sq = dy * dy + dx * dx
    y_lo, y_hi = sorted((0, dy))
    x_lo, x_hi = sorted((0, dx))
    # Integer comparison `num < length_sq` is the reference's float test `num / length_sq < 1`
    # without rounding: both sides are exact integers.
    points = [
        (y, x) for y in range(y_lo, y_hi + 1) for x in range(x_lo, x_hi + 1) if (dy * x - dx * y) ** 2 < length_sq
    ]
    points.sort(key=lambda point: -abs(point[0]) - abs(point[1]))
    return np.asarray(points, dtype=np.int64).reshape(-1, 2)


def build_path_index(radius: int, size: tuple[int, int]) -> PathIndex:
    """Build the directions, path groups and flat source/destination indices (spec §6b, PathIndex).

    radius: integer r >= 2 (the reference's IRN uses 10 for training, 5 for the random walk).
    size: (H, W) grid size, at least (rf + 1, 2 rf + 1) so that one source exists.
    Returns a PathIndex; see its fields for shapes. Directions are grouped by path length,
    groups in increasing length and directions inside a group in `search_directions` order;
    that concatenation order is the channel order of the affinity tensors.
    """
    if int(radius) != radius or radius < 2:
        raise ValueError(f"radius must be an integer >= 2, got {radius!r}")
    radius = int(radius)
    height, width = int(size[0]), int(size[1])
    radius_floor = radius - 1  # ceil(r) - 1 for an integer r
    crop_h, crop_w = height - radius_floor, width - 2 * radius_floor
    if crop_h <= 0 or crop_w <= 0:
        raise ValueError(
            f"grid size {(height, width)} leaves no source for radius {radius}: "
            f"need H > {radius_floor} and W > {2 * radius_floor}"
        )

    paths_by_length: dict[int, list[np.ndarray]] = {}
    for dy, dx in search_directions(radius):
        path = direction_path(dy, dx)
        paths_by_length.setdefault(len(path), []).append(path)
    search_paths = [np.stack(paths_by_length[length]) for length in sorted(paths_by_length)]
    search_dst = np.concatenate([paths[:, 0] for paths in search_paths], axis=0)

    grid = np.arange(height * width, dtype=np.int64).reshape(height, width)
    src_indices = grid[0:crop_h, radius_floor : radius_floor + crop_w].reshape(-1)
    # grid[dy + i, rf + dx + j] = src[i, j] + dy * W + dx, so each path point is one flat shift
    # of all sources; equal to the reference's slice grid[dy:dy+ch, rf+dx:rf+dx+cw] per point.
    path_indices = [
        src_indices[None, None, :] + (paths[..., 0] * width + paths[..., 1])[..., None] for paths in search_paths
    ]
    dst_indices = np.concatenate([indices[:, 0] for indices in path_indices], axis=0)

    return PathIndex(
        radius=radius,
        radius_floor=radius_floor,
        size=(height, width),
        search_dst=search_dst,
        search_paths=search_paths,
        path_indices=path_indices,
        src_indices=src_indices,
        dst_indices=dst_indices,
    )

"""Path index, affinity labels and predicted affinities on tiny grids (spec §6b)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.masks.affinity import affinity_labels, edge_to_affinity, path_indices_to_torch, reduce_label
from recam.masks.path_index import build_path_index, direction_path


@pytest.mark.parametrize(("radius", "n_dirs"), [(10, 152), (5, 34)])
def test_direction_count(radius, n_dirs):
    path_index = build_path_index(radius, (2 * radius + 3, 2 * radius + 5))
    assert path_index.n_dirs == n_dirs
    assert path_index.dst_indices.shape == (n_dirs, path_index.src_indices.size)
    # Each offset once, and never its opposite: the half-disc is forward only.
    offsets = {tuple(d) for d in path_index.search_dst.tolist()}
    assert len(offsets) == n_dirs
    assert not offsets & {(-dy, -dx) for dy, dx in offsets}


def test_search_paths_run_from_destination_to_origin():
    path_index = build_path_index(5, (12, 14))
    lengths = [paths.shape[1] for paths in path_index.search_paths]
    assert lengths == sorted(set(lengths))  # one group per length, increasing
    for paths in path_index.search_paths:
        assert np.array_equal(paths[:, -1], np.zeros_like(paths[:, -1]))  # the source itself
        steps = np.abs(paths).sum(-1)
        assert np.all(np.diff(steps, axis=1) <= 0)  # decreasing |y| + |x|
    assert np.array_equal(np.concatenate([p[:, 0] for p in path_index.search_paths]), path_index.search_dst)


def test_known_paths():
    assert direction_path(0, 3).tolist() == [[0, 3], [0, 2], [0, 1], [0, 0]]
    # The diagonal keeps the points at distance 1/sqrt(2) < 1 from the line: (0, 1) and (1, 0).
    assert direction_path(1, 1).tolist() == [[1, 1], [0, 1], [1, 0], [0, 0]]
    # (2, -1): the whole 3x2 box is within distance < 1 of the line (the far corners (0, -1) and
    # (2, 0) sit at 2/sqrt(5)); ties in |y| + |x| keep their y-major order (stable sort).
    assert direction_path(2, -1).tolist() == [[2, -1], [1, -1], [2, 0], [0, -1], [1, 0], [0, 0]]


def test_destinations_are_first_points_and_stay_in_grid():
    height, width = 12, 14
    path_index = build_path_index(5, (height, width))
    rf = path_index.radius_floor
    ch, cw = path_index.cropped_size
    ys, xs = np.divmod(path_index.src_indices, width)
    assert ys.min() == 0 and ys.max() == ch - 1 and xs.min() == rf and xs.max() == rf + cw - 1
    expected_dst = path_index.src_indices[None] + (path_index.search_dst @ np.array([width, 1]))[:, None]
    assert np.array_equal(path_index.dst_indices, expected_dst)
    assert np.array_equal(path_index.dst_indices, np.concatenate([p[:, 0] for p in path_index.path_indices]))
    # No wrap-around: each destination is the source moved by (dy, dx) in 2-D, inside the grid.
    dst_y, dst_x = np.divmod(path_index.dst_indices, width)
    assert np.array_equal(dst_y - ys[None], np.broadcast_to(path_index.search_dst[:, :1], dst_y.shape))
    assert np.array_equal(dst_x - xs[None], np.broadcast_to(path_index.search_dst[:, 1:], dst_x.shape))
    for indices in path_index.path_indices:
        assert indices.min() >= 0 and indices.max() < height * width


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="no source"):
        build_path_index(5, (4, 20))
    with pytest.raises(ValueError, match="radius"):
        build_path_index(1, (10, 10))


def test_reduce_label_picks_centre_pixel_for_exact_factor():
    label = np.arange(16 * 20, dtype=np.uint8).reshape(16, 20)
    assert np.array_equal(reduce_label(label), label[2::4, 2::4])
    # Half-way sizes round to even: 18 / 4 = 4.5 -> 4, 22 / 4 = 5.5 -> 6.
    assert reduce_label(np.zeros((18, 22), np.uint8)).shape == (4, 6)


def slow_affinity_labels(label: np.ndarray, radius: int, ignore_index: int) -> dict[str, np.ndarray]:
    """Per-pair loop straight from the spec's definition, for the directions of a path index."""
    path_index = build_path_index(radius, label.shape)
    rf = path_index.radius_floor
    ch, cw = path_index.cropped_size
    out = {name: np.zeros((path_index.n_dirs, ch * cw), np.float32) for name in ("bg_pos", "fg_pos", "neg")}
    for d, (dy, dx) in enumerate(path_index.search_dst.tolist()):
        for s, (i, j) in enumerate((i, j) for i in range(ch) for j in range(rf, rf + cw)):
            a, b = int(label[i, j]), int(label[i + dy, j + dx])
            if a == ignore_index or b == ignore_index:
                continue
            out["bg_pos"][d, s] = a == b == 0
            out["fg_pos"][d, s] = a == b and a > 0
            out["neg"][d, s] = a != b
    return out


@pytest.mark.parametrize("ignore_index", [255, 7])
def test_affinity_labels_match_slow_loop_and_ignore(ignore_index):
    rng = np.random.default_rng(0)
    label = rng.choice(np.array([0, 3, 7, 40, 255], np.uint8), size=(12, 14))
    path_index = build_path_index(5, label.shape)
    fast = affinity_labels(label, path_index, ignore_index=ignore_index)
    slow = slow_affinity_labels(label, 5, ignore_index)
    for name in ("bg_pos", "fg_pos", "neg"):
        assert np.array_equal(fast[name], slow[name]), name
    # Classes past VOC's 21 stay valid: only the ignore value is excluded.
    src = label.reshape(-1)[path_index.src_indices]
    assert (fast["fg_pos"][:, src == 40] > 0).any()
    # The three labels are disjoint, and a pair touching the ignore value has none.
    total = fast["bg_pos"] + fast["fg_pos"] + fast["neg"]
    assert total.max() == 1
    touches_ignore = (src[None] == ignore_index) | (label.reshape(-1)[path_index.dst_indices] == ignore_index)
    assert np.array_equal(total == 0, touches_ignore)


def test_affinity_labels_batch_equals_per_image():
    rng = np.random.default_rng(1)
    labels = rng.choice(np.array([0, 1, 2, 255], np.uint8), size=(3, 12, 14))
    path_index = build_path_index(5, (12, 14))
    batch = affinity_labels(labels, path_index)
    for b in range(3):
        single = affinity_labels(labels[b], path_index)
        for name in single:
            assert np.array_equal(batch[name][b], single[name])


def slow_edge_to_affinity(edge: np.ndarray, radius: int) -> np.ndarray:
    """1 - max of edge over each path, one (direction, source) pair at a time."""
    path_index = build_path_index(radius, edge.shape[-2:])
    rf = path_index.radius_floor
    ch, cw = path_index.cropped_size
    paths = [path for group in path_index.search_paths for path in group]
    out = np.zeros((edge.shape[0], len(paths), ch * cw), np.float32)
    for b in range(edge.shape[0]):
        for d, path in enumerate(paths):
            for s, (i, j) in enumerate((i, j) for i in range(ch) for j in range(rf, rf + cw)):
                out[b, d, s] = 1 - max(edge[b, i + y, j + x] for y, x in path.tolist())
    return out


def test_edge_to_affinity_matches_slow_loop():
    edge = torch.rand(2, 1, 12, 14, generator=torch.Generator().manual_seed(0))
    path_index = build_path_index(5, (12, 14))
    fast = edge_to_affinity(edge, path_index)
    assert fast.shape == (2, 34, path_index.src_indices.size)
    assert np.array_equal(fast.numpy(), slow_edge_to_affinity(edge[:, 0].numpy(), 5))
    # The other accepted layouts and pre-built index tensors give the same numbers.
    assert torch.equal(edge_to_affinity(edge[:, 0], path_index), fast)
    assert torch.equal(edge_to_affinity(edge[1, 0], path_index), fast[1:])
    assert torch.equal(edge_to_affinity(edge, path_index, path_indices=path_indices_to_torch(path_index)), fast)


def test_edge_to_affinity_gradient_reaches_path_maximum():
    edge = torch.zeros(1, 1, 12, 14)
    edge[0, 0, 5, 7] = 0.5
    edge.requires_grad_(True)
    path_index = build_path_index(5, (12, 14))
    aff = edge_to_affinity(edge, path_index)
    aff.sum().backward()
    # Every pair whose path crosses (5, 7) has affinity 0.5, and the gradient lands only there.
    crossing = int((aff < 1).sum())
    assert crossing > 0 and torch.all((aff == 1) | (aff == 0.5))
    assert edge.grad[0, 0, 5, 7] == -crossing


def test_edge_to_affinity_rejects_wrong_size():
    with pytest.raises(ValueError, match="edge must be"):
        edge_to_affinity(torch.rand(1, 1, 10, 14), build_path_index(5, (12, 14)))

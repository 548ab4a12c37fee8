"""The sparse random walk against the dense oracle, and its known answers (spec §6c)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.masks.random_walk import (
    dense_transition,
    neighbour_table,
    pad_edge,
    random_walk,
    random_walk_dense,
    rw_to_label,
    upsample_walk,
)


def random_inputs(classes: int, height: int, width: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    cams = torch.rand(classes, height, width, generator=gen, dtype=torch.float64)
    edge = torch.rand(1, height, width, generator=gen, dtype=torch.float64) ** 3  # mostly weak boundaries
    return cams, edge


@pytest.mark.parametrize(
    "classes,height,width,beta,exp_times,radius,seed",
    [
        (2, 7, 9, 10.0, 8, 5, 0),
        (3, 5, 4, 10.0, 3, 5, 1),
        (1, 9, 6, 2.0, 1, 3, 2),
        (2, 4, 11, 1.0, 0, 4, 3),
        (1, 1, 1, 10.0, 8, 5, 4),
    ],
)
def test_sparse_walk_equals_dense_oracle(classes, height, width, beta, exp_times, radius, seed):
    cams, edge = random_inputs(classes, height, width, seed)
    kwargs = {"beta": beta, "exp_times": exp_times, "radius": radius}
    fast = random_walk(cams, edge, **kwargs)
    slow = random_walk_dense(cams, edge, **kwargs)
    assert fast.dtype == torch.float64 and fast.shape == cams.shape
    torch.testing.assert_close(fast, slow, rtol=1e-10, atol=1e-12)


def test_gather_table_is_the_column_normalised_transition():
    """Row j of the table holds column j of T = A^beta / colsum: the walk is x · T, not x · Tᵀ."""
    _, edge = random_inputs(1, 6, 8, seed=5)
    table = neighbour_table(edge, beta=10.0, radius=5)
    n_pixels = edge[0].numel()
    from_table = torch.zeros(n_pixels, n_pixels, dtype=torch.float64)
    columns = torch.arange(n_pixels)[:, None].expand_as(table["index"])
    from_table.index_put_((table["index"], columns), table["weight"], accumulate=True)

    trans_mat_1 = dense_transition(edge, beta=10.0, exp_times=0, radius=5)["trans_mat_1"]
    torch.testing.assert_close(from_table, trans_mat_1, rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(table["weight"].sum(dim=1), torch.ones(n_pixels, dtype=torch.float64))
    # The edge is random, so T is not symmetric and the transpose would fail this test.
    assert not torch.allclose(trans_mat_1, trans_mat_1.t(), atol=1e-6)


def test_walk_keeps_constants_and_degree_weighted_mass():
    cams, edge = random_inputs(2, 8, 7, seed=6)
    degree = dense_transition(edge, exp_times=0)["dense_aff"].pow(10.0).sum(dim=0)
    seeds = (cams * (1 - edge)).reshape(2, -1)
    walked = random_walk(cams, edge).reshape(2, -1)
    # sum_j c_j (x · T)_j = sum_j c_j x_j, because T = W / c with W symmetric.
    torch.testing.assert_close(walked @ degree, seeds @ degree, rtol=1e-12, atol=0)
    # An averaging operator maps a constant map to itself.
    flat = random_walk(1 / (1 - edge), edge)
    torch.testing.assert_close(flat, torch.ones_like(flat), rtol=1e-12, atol=1e-12)


def test_walk_does_not_cross_a_full_boundary():
    cams = torch.zeros(1, 6, 9, dtype=torch.float64)
    cams[0, :, :2] = 1.0
    edge = torch.zeros(1, 6, 9, dtype=torch.float64)
    edge[0, :, 4] = 1.0  # a wall: every path from the left of column 4 to its right crosses it
    walked = random_walk(cams, edge)
    assert torch.equal(walked[0, :, 4:], torch.zeros(6, 5, dtype=torch.float64))
    assert (walked[0, :, :4] > 0).all()


def test_pad_edge_adds_ones_left_right_and_bottom_only():
    edge = torch.zeros(1, 3, 4)
    padded = pad_edge(edge, 2)
    assert padded.shape == (1, 5, 8)
    assert torch.equal(padded[0, :3, 2:6], edge[0])
    assert padded[0, 3:].eq(1).all() and padded[0, :, :2].eq(1).all() and padded[0, :, 6:].eq(1).all()


def test_no_classes():
    _, edge = random_inputs(1, 5, 6, seed=7)
    cams = torch.zeros(0, 5, 6, dtype=torch.float64)
    walked = random_walk(cams, edge)
    assert walked.shape == (0, 5, 6)
    label = rw_to_label(walked, np.zeros(0, np.int64), (18, 22), 0.28)
    assert label.dtype == torch.uint8 and label.shape == (18, 22) and not label.any()


def test_one_class_labels_against_the_background_plane():
    rw = torch.tensor([[[0.0, 1.0], [0.5, 0.2]]])
    label = rw_to_label(rw, [14], (7, 8), 0.3)
    assert label.shape == (7, 8)
    assert set(label.unique().tolist()) == {0, 15}
    # The global maximum becomes exactly 1, so a background plane of 1.0 ties it and wins.
    assert not rw_to_label(rw, [14], (7, 8), 1.0).any()


def test_upsampling_normalises_by_the_global_maximum():
    rw = torch.stack([torch.full((3, 4), 2.0), torch.full((3, 4), 4.0)])
    up = upsample_walk(rw, (11, 13))
    assert up.shape == (2, 11, 13)
    # Per-class normalisation would give ones in both channels.
    torch.testing.assert_close(up[0], torch.full((11, 13), 0.5))
    torch.testing.assert_close(up[1], torch.ones(11, 13))
    assert not upsample_walk(torch.zeros(1, 3, 4), (12, 16)).any()


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError):
        random_walk(torch.rand(2, 4, 5), torch.rand(4, 5))
    with pytest.raises(ValueError):
        random_walk(torch.rand(2, 4, 5), torch.rand(1, 4, 6))
    with pytest.raises(ValueError):
        rw_to_label(torch.rand(2, 4, 5), [3], (16, 20), 0.28)

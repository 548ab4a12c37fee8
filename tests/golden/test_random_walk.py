"""Golden vectors of the random walk (spec §6c): edge -> affinities -> T^(2^exp_times) -> labels.

Every size and parameter comes from edge_to_affinity_and_random_walk.npz; tolerances are the
golden README's for that file.
"""

from __future__ import annotations

import numpy as np
import torch

from recam.masks.random_walk import (
    dense_transition,
    pad_edge,
    random_walk,
    random_walk_dense,
    rw_to_label,
    sparse_affinity,
    upsample_walk,
)

CASE = "edge_to_affinity_and_random_walk"


def params(z: dict) -> dict:
    return {"beta": float(z["beta"]), "exp_times": int(z["exp_times"]), "radius": int(z["radius"])}


def threshold_indices(z: dict) -> list[int]:
    """The `t{ti}` indices of the label arrays present, e.g. [0, 1]."""
    found = sorted(int(key.rsplit("_t", 1)[1]) for key in z if key.startswith("sem_seg_label_t"))
    assert found == list(range(len(z["sem_seg_bg_thres"]))), found
    return found


def test_padding_and_affinities_match_golden(golden):
    z = golden(CASE)
    p = params(z)
    edge = torch.from_numpy(z["edge"])

    padded = pad_edge(edge, p["radius"])
    assert padded.shape[0] == 1
    assert np.array_equal(padded[0].numpy(), z["edge_padded"])

    sparse = sparse_affinity(edge, p["radius"]).numpy()
    assert sparse.shape == z["sparse_aff"].shape
    assert np.allclose(sparse, z["sparse_aff"], rtol=1e-5, atol=1e-6)


def test_dense_oracle_matches_golden(golden):
    z = golden(CASE)
    dense = dense_transition(torch.from_numpy(z["edge"]), **params(z))
    for name in ("dense_aff", "trans_mat_1"):
        assert np.allclose(dense[name].numpy(), z[name], rtol=1e-5, atol=1e-6), name
    assert np.allclose(dense["trans_mat"].numpy(), z["trans_mat"], rtol=0, atol=2e-4)

    rw = random_walk_dense(torch.from_numpy(z["cams"]), torch.from_numpy(z["edge"]), **params(z))
    assert np.allclose(rw.numpy(), z["rw"][:, 0], rtol=0, atol=3e-5)


def test_random_walk_matches_golden(golden):
    z = golden(CASE)
    cams, edge = torch.from_numpy(z["cams"]), torch.from_numpy(z["edge"])

    rw = random_walk(cams, edge, **params(z))
    assert rw.dtype == torch.float32 and rw.shape == cams.shape
    assert np.allclose(rw.numpy(), z["rw"][:, 0], rtol=0, atol=3e-5)

    rw64 = random_walk(cams.double(), edge.double(), **params(z))
    assert rw64.dtype == torch.float64
    assert np.allclose(rw64.numpy(), z["rw_f64"][:, 0], rtol=1e-9, atol=0)


def test_labels_match_golden(golden):
    z = golden(CASE)
    keys, image_size = z["keys"], tuple(int(v) for v in z["image_size"])

    # Step 6 alone, from the reference's own walk.
    up = upsample_walk(torch.from_numpy(z["rw"][:, 0]), image_size)
    assert np.allclose(up.numpy(), z["rw_up"], rtol=0, atol=5e-5)

    rw = random_walk(torch.from_numpy(z["cams"]), torch.from_numpy(z["edge"]), **params(z))
    assert np.allclose(upsample_walk(rw, image_size).numpy(), z["rw_up"], rtol=0, atol=5e-5)
    for ti in threshold_indices(z):
        ref = z[f"sem_seg_label_t{ti}"]
        decided = z[f"sem_seg_label_margin_t{ti}"] >= 1e-4
        label = rw_to_label(rw, keys, image_size, float(z["sem_seg_bg_thres"][ti])).numpy()
        assert label.dtype == ref.dtype and label.shape == ref.shape
        assert np.array_equal(label[decided], ref[decided]), f"t{ti}"
        # Labels come only from K' = [0, keys + 1], and some pixel gets a class, so the lookup is used.
        assert set(np.unique(label)) <= {0, *(int(k) + 1 for k in keys)}
        assert (label > 0).any()

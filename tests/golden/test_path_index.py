"""Golden vectors of the IRN path index and affinity labels (spec §6b); the README asks exact equality."""

from __future__ import annotations

import numpy as np

from recam.masks.affinity import affinity_labels, reduce_label
from recam.masks.path_index import build_path_index


def radius_prefixes(z: dict) -> list[str]:
    """The `r{radius}_` prefixes present in path_index.npz, e.g. ["r10_", "r5_"]."""
    return sorted({key.split("_", 1)[0] + "_" for key in z if key.endswith("_radius")})


def check_path_index(z: dict, prefix: str) -> None:
    """Build the path index of one `prefix` (e.g. "r10_") and compare every array exactly."""
    radius = int(z[prefix + "radius"])
    size = tuple(int(v) for v in z[prefix + "default_size"])
    n_groups = int(z[prefix + "n_path_lengths"])

    got = build_path_index(radius, size)

    assert got.radius == radius
    assert got.radius_floor == int(z[prefix + "radius_floor"])
    assert got.size == size
    assert len(got.search_paths) == n_groups and len(got.path_indices) == n_groups
    for name in ("search_dst", "src_indices", "dst_indices"):
        ref = z[prefix + name]
        assert getattr(got, name).dtype == ref.dtype and np.array_equal(getattr(got, name), ref), prefix + name
    for j in range(n_groups):
        for name in ("search_paths", "path_indices"):
            ref = z[f"{prefix}{name}_{j}"]
            mine = getattr(got, name)[j]
            assert mine.dtype == ref.dtype and np.array_equal(mine, ref), f"{prefix}{name}_{j}"


def test_path_index_matches_golden(golden):
    z = golden("path_index")
    prefixes = radius_prefixes(z)
    assert len(prefixes) >= 2, f"expected radius 10 and 5 vectors, found prefixes {prefixes}"
    for prefix in prefixes:
        check_path_index(z, prefix)


def test_affinity_labels_match_golden(golden):
    z = golden("affinity_labels")
    reduced = reduce_label(z["label"])
    assert reduced.dtype == z["reduced_label"].dtype and np.array_equal(reduced, z["reduced_label"])

    path_index = build_path_index(int(z["radius"]), reduced.shape)
    assert np.array_equal(path_index.src_indices, z["src_indices"])
    assert np.array_equal(path_index.dst_indices, z["dst_indices"])

    labels = affinity_labels(reduced, path_index)
    for name in ("bg_pos", "fg_pos", "neg"):
        ref = z[f"{name}_label"]
        assert labels[name].dtype == ref.dtype and np.array_equal(labels[name], ref), name
    # The golden label has objects, background and 255 pixels, so every label kind occurs.
    assert all(labels[name].any() for name in ("bg_pos", "fg_pos", "neg"))

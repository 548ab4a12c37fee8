"""Transforms of spec §1.5 and the datasets built on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.data import transforms as T
from recam.data.datasets import collate_multiscale, size_buckets


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_scaled_size_rounds_half_to_even() -> None:
    assert T.scaled_size(37, 45, 0.5) == (18, 22)  # 18.5 -> 18, 22.5 -> 22
    assert T.scaled_size(45, 37, 1.5) == (68, 56)  # 67.5 -> 68, 55.5 -> 56


@pytest.mark.parametrize("shape", [(40, 60), (60, 40), (50, 50)])
def test_resize_long_puts_the_long_side_in_range(shape) -> None:
    image = np.zeros((*shape, 3), np.uint8)
    for seed in range(20):
        out = T.resize_long(image, 30, 35, rng(seed))
        assert 30 <= max(out.shape[:2]) <= 35
        assert abs(out.shape[0] / out.shape[1] - shape[0] / shape[1]) < 0.1


def test_resize_long_draws_both_ends() -> None:
    image = np.zeros((10, 20, 3), np.uint8)
    sides = {T.resize_long(image, 8, 9, rng(seed)).shape[1] for seed in range(40)}
    assert sides == {8, 9}


def test_random_crop_of_a_larger_image_is_a_window() -> None:
    image = np.arange(20 * 30, dtype=np.float32).reshape(20, 30, 1)
    label = np.arange(20 * 30).reshape(20, 30).astype(np.uint8)
    crop_image, crop_label = T.random_crop([image, label], 10, [0.0, 255], rng(3))
    top, left = divmod(int(crop_image[0, 0, 0]), 30)
    np.testing.assert_array_equal(crop_image, image[top : top + 10, left : left + 10])
    np.testing.assert_array_equal(crop_label, label[top : top + 10, left : left + 10])


def test_random_crop_of_a_smaller_image_pads_at_a_random_place() -> None:
    image = np.ones((4, 6, 3), np.float32)
    label = np.full((4, 6), 7, np.uint8)
    offsets = set()
    for seed in range(30):
        crop_image, crop_label = T.random_crop([image, label], 10, [0.0, 255], rng(seed))
        rows, cols = np.nonzero(crop_image[..., 0])
        assert (rows.max() - rows.min() + 1, cols.max() - cols.min() + 1) == (4, 6)
        np.testing.assert_array_equal(crop_label == 7, crop_image[..., 0] == 1)  # one shared box
        assert set(np.unique(crop_label)) == {7, 255}
        offsets.add((rows.min(), cols.min()))
    assert len(offsets) > 5  # not always the top-left corner


def test_top_left_crop() -> None:
    image = np.ones((3, 7, 3), np.float32)
    out = T.top_left_crop(image, 5, 0.0)
    assert out.shape == (5, 5, 3)
    assert out[:3].all() and not out[3:].any()


def test_normalize_matches_the_formula() -> None:
    image = np.array([[[0, 128, 255]]], np.uint8)
    out = T.normalize(image, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    expected = (np.array([0, 128, 255]) / 255 - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(out[0, 0], expected, rtol=1e-6)
    assert out.dtype == np.float32


def test_hflip_flips_all_or_nothing() -> None:
    a = np.arange(12).reshape(3, 4)
    b = a * 10
    flipped = [T.random_hflip([a, b], rng(seed)) for seed in range(20)]
    assert any(np.array_equal(x, a[:, ::-1]) for x, _ in flipped) and any(np.array_equal(x, a) for x, _ in flipped)
    for x, y in flipped:
        np.testing.assert_array_equal(y, x * 10)


def test_golden_multiscale_inputs(golden) -> None:
    """PIL bicubic rescale + normalisation reproduce the reference's network inputs."""
    g = golden("multiscale_cam_end_to_end")
    image = g["image"]
    for j, scale in enumerate(g["scales"]):
        scaled = image if scale == 1.0 else T.pil_rescale(image, float(scale))
        got = T.to_chw(T.normalize(scaled, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
        np.testing.assert_allclose(got, g[f"net_input_s{j}"], rtol=0, atol=1e-6)


def test_size_buckets_group_equal_sizes() -> None:
    sizes = [(10, 20), (20, 10), (10, 20), (10, 20), (5, 5)]
    buckets = size_buckets(sizes, 2)
    assert sorted(i for b in buckets for i in b) == list(range(5))
    for bucket in buckets:
        assert len({sizes[i] for i in bucket}) == 1 and len(bucket) <= 2
    assert size_buckets(sizes, 1) == [[0], [2], [3], [1], [4]]


def test_collate_multiscale_stacks_per_scale() -> None:
    samples = [
        {
            "id": f"i{k}",
            "size": (4, 6),
            "label": np.ones(3, np.float32),
            "images": [torch.full((3, 4, 6), float(k)), torch.zeros(3, 2, 3)],
        }
        for k in range(3)
    ]
    batch = collate_multiscale(samples)
    assert batch["ids"] == ["i0", "i1", "i2"] and batch["size"] == (4, 6)
    assert [tuple(x.shape) for x in batch["images"]] == [(3, 3, 4, 6), (3, 3, 2, 3)]
    assert batch["images"][0][2].eq(2.0).all()

"""Dense CRF wrappers and IR labels (spec §6a, §7.1) on tiny images with known answers."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from recam.masks.crf import IR_LABEL_KERNELS, crf_from_labels, crf_from_probs
from recam.masks.ir_labels import combine_ir_label, confident_labels, ir_label

H, W = 16, 20


def two_region_image() -> np.ndarray:
    """(H, W, 3) uint8: dark left half, bright right half, a little noise."""
    rng = np.random.default_rng(0)
    image = np.zeros((H, W, 3), dtype=np.int64)
    image[:, W // 2 :] = 200
    return np.clip(image + rng.integers(0, 8, size=image.shape), 0, 255).astype(np.uint8)


def test_labels_outside_keys_never_appear():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    keys = np.array([4, 14])
    high_res = rng.random((2, H, W), dtype=np.float32)
    label = ir_label(image, high_res, keys)
    assert label.dtype == np.uint8 and label.shape == (H, W)
    assert set(np.unique(label)) <= {0, 5, 15, 255}
    # Both classes clear the thresholds somewhere, so the map is not trivially background.
    assert {5, 15} & set(np.unique(label))
    crf = crf_from_labels(image, confident_labels(high_res, keys, 0.35), 3)
    assert crf.dtype == np.int64 and set(np.unique(crf)) <= {0, 1, 2}


def test_no_classes_is_all_background():
    image = two_region_image()
    label = ir_label(image, np.zeros((0, H, W), np.float32), np.zeros(0, np.int64))
    assert label.dtype == np.uint8 and not label.any()
    assert not confident_labels(np.zeros((0, H, W), np.float32), np.zeros(0, np.int64), 0.1).any()
    only_bg = crf_from_labels(image, np.zeros((H, W), np.int64), 1)
    assert only_bg.dtype == np.int64 and only_bg.shape == (H, W) and not only_bg.any()


def test_confident_labels_first_max_and_float32_threshold():
    # A CAM equal to the float32-rounded threshold ties with the background plane: background wins.
    high_res = np.array([[[0.35, 0.36]], [[0.2, 0.37]]], dtype=np.float32)
    got = confident_labels(high_res, np.array([3, 7]), 0.35)
    np.testing.assert_array_equal(got, [[0, 2]])


def test_without_pairwise_terms_crf_keeps_the_labels():
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    labels = rng.integers(0, 4, size=(H, W))
    got = crf_from_labels(image, labels, 4, kernels=replace(IR_LABEL_KERNELS, gauss_compat=0, bilateral_compat=0))
    np.testing.assert_array_equal(got, labels)


def test_zero_unsure_fills_from_neighbours_and_shifts_labels():
    image = two_region_image()
    labels = np.where(np.arange(W) < W // 2, 1, 2)[None].repeat(H, axis=0)
    labels[4:12, 2:8] = 0  # an "unsure" hole inside the left (label 1) region
    unsure = crf_from_labels(image, labels, 2, zero_unsure=True)
    # Input value v >= 1 is CRF label v-1; the hole takes its surroundings' label 1 -> index 0.
    np.testing.assert_array_equal(unsure, np.where(np.arange(W) < W // 2, 0, 1)[None].repeat(H, axis=0))
    # With zero_unsure False, 0 is a real label: a 0 block with a colour of its own stays 0
    # (the bilateral kernel keeps it apart), while the same block as "unsure" is still filled.
    image[4:12, 2:8] = 100
    real = crf_from_labels(image, labels, 3, zero_unsure=False)
    expected = np.where(np.arange(W) < W // 2, 1, 2)[None].repeat(H, axis=0)
    expected[4:12, 2:8] = 0
    np.testing.assert_array_equal(real, expected)
    assert (crf_from_labels(image, labels, 2, zero_unsure=True)[4:12, 2:8] == 0).all()


def test_out_of_range_labels_are_rejected():
    image = two_region_image()
    with pytest.raises(ValueError):
        crf_from_labels(image, np.full((H, W), 3), 3)
    with pytest.raises(ValueError):
        crf_from_labels(image, np.full((H, W), -1), 3)
    with pytest.raises(ValueError):
        crf_from_labels(image.astype(np.float32), np.zeros((H, W), np.int64), 2)


def test_combine_ir_label():
    fg = np.array([[0, 0, 3, 3]])
    bg = np.array([[0, 3, 0, 3]])
    np.testing.assert_array_equal(combine_ir_label(fg, bg), np.array([[0, 255, 3, 3]], dtype=np.uint8))


def test_crf_from_probs_keeps_shape_and_normalises():
    image = two_region_image()
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(3, H, W))
    logits[1, :, W // 2 :] += 4.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=0, keepdims=True)
    q = crf_from_probs(image, probs)
    assert q.shape == (3, H, W) and q.dtype == np.float32
    np.testing.assert_allclose(q.sum(axis=0), 1.0, atol=1e-5)
    assert (q.argmax(axis=0)[:, W // 2 :] == 1).all()
    # Views (non-contiguous image and probabilities) give the same answer as contiguous copies.
    view = crf_from_probs(np.asfortranarray(image), np.asfortranarray(probs))
    np.testing.assert_array_equal(view, q)
    assert (crf_from_probs(image, probs[:1] / probs[:1]) == 1).all()

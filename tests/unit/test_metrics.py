"""Seed labels, confusion/IoU, the one-pass threshold sweep and average precision, on known answers."""

from __future__ import annotations

import numpy as np
import pytest

from recam.eval.metrics import (
    ThresholdSweep,
    average_precision,
    confusion_matrix,
    iou_from_confusion,
    seed_label,
    sem_seg_confusion,
    sweep_confusions,
)

NUM_LABELS = 21


def random_image(rng: np.random.Generator, thresholds: np.ndarray, height: int = 13, width: int = 17):
    """CAMs quantised to a coarse grid (many ties between classes), with pixels exactly at the thresholds."""
    n = int(rng.integers(1, 4))
    keys = np.sort(rng.choice(20, size=n, replace=False))
    cams = (rng.integers(0, 20, size=(n, height, width)) / 20).astype(np.float32)
    # Put some per-pixel maxima exactly on a threshold (after its float32 rounding, as compared).
    for t in thresholds:
        ys, xs = rng.integers(0, height, 5), rng.integers(0, width, 5)
        cams[:, ys, xs] = np.minimum(cams[:, ys, xs], np.float32(t))
        cams[0, ys, xs] = np.float32(t)
    gt = rng.integers(0, NUM_LABELS, size=(height, width)).astype(np.uint8)
    gt[rng.random((height, width)) < 0.1] = 255
    return cams, keys, gt


def test_sweep_equals_per_threshold_evaluation_exactly():
    rng = np.random.default_rng(0)
    # Unsorted, with a repeat, values on the CAM grid (ties) and off it.
    thresholds = np.array([0.25, 0.1, 0.21, 0.5, 0.25, 0.0, 0.95, 1.0])
    sweep = ThresholdSweep(thresholds, num_labels=NUM_LABELS)
    slow = np.zeros((len(thresholds), NUM_LABELS, NUM_LABELS), dtype=np.int64)
    ties = 0
    for _ in range(6):
        cams, keys, gt = random_image(rng, thresholds)
        ties += int(np.isin(cams.max(axis=0), thresholds.astype(np.float32)).sum())
        sweep.update(cams, keys, gt)
        for ti, t in enumerate(thresholds):
            slow[ti] += confusion_matrix(gt, seed_label(cams, keys, t), NUM_LABELS)
    assert ties > 0
    np.testing.assert_array_equal(sweep.confusions, slow)
    result = sweep.results()
    expected = iou_from_confusion(slow)
    np.testing.assert_array_equal(result["miou"], expected["miou"])
    np.testing.assert_array_equal(result["among_predfg_bg"], expected["among_predfg_bg"])
    assert result["best_index"] == int(np.nanargmax(expected["miou"]))


def test_tie_with_threshold_goes_to_background():
    keys = np.array([4])
    cams = np.array([[[0.3, 0.21, 0.2]]], dtype=np.float32)
    expected = np.array([[5, 0, 0]])
    np.testing.assert_array_equal(seed_label(cams, keys, 0.21), expected)
    gt = np.array([[5, 5, 0]], dtype=np.uint8)
    sweep = sweep_confusions(cams, keys, gt, [0.21], NUM_LABELS)[0]
    np.testing.assert_array_equal(sweep, confusion_matrix(gt, expected, NUM_LABELS))


def test_first_maximum_wins_between_classes():
    keys = np.array([2, 7])
    cams = np.array([[[0.6, 0.4]], [[0.6, 0.9]]], dtype=np.float32)
    np.testing.assert_array_equal(seed_label(cams, keys, 0.1), [[3, 8]])


def test_image_without_classes_is_background():
    cams = np.zeros((0, 2, 3), dtype=np.float32)
    keys = np.zeros(0, dtype=np.int64)
    np.testing.assert_array_equal(seed_label(cams, keys, 0.2), np.zeros((2, 3)))
    gt = np.array([[0, 1, 255], [1, 1, 0]], dtype=np.uint8)
    conf = sweep_confusions(cams, keys, gt, [0.1, 0.2], NUM_LABELS)
    assert conf[:, 0, 0].tolist() == [2, 2] and conf[:, 1, 0].tolist() == [3, 3] and conf.sum() == 10


def test_hand_made_iou_one_half():
    # gt: class 1 on the top-left 2x2 block; pred: class 1 on the top two rows (those 4 pixels
    # plus 4 more).
    gt = np.zeros((4, 4), dtype=np.uint8)
    gt[:2, :2] = 1
    pred = np.zeros((4, 4), dtype=np.int64)
    pred[:2, :] = 1
    scores = iou_from_confusion(confusion_matrix(gt, pred, 2))
    # Class 1: intersection 4, union 8. Background: intersection 8, union 12.
    np.testing.assert_allclose(scores["iou"], [8 / 12, 1 / 2])
    assert scores["miou"] == pytest.approx((8 / 12 + 1 / 2) / 2)
    # All 4 wrongly-foreground pixels are gt background, out of 8 foreground predictions.
    assert scores["among_predfg_bg"] == pytest.approx(1 / 2)
    assert scores["fp"][1] == pytest.approx(1 / 2) and scores["fn"][1] == pytest.approx(0)


def test_confusion_ignores_255_and_rejects_out_of_range():
    gt = np.array([[1, 255], [0, 2]], dtype=np.uint8)
    pred = np.array([[1, 2], [2, 2]])
    conf = confusion_matrix(gt, pred, 3)
    assert conf.dtype == np.int64 and conf.sum() == 3
    assert conf[1, 1] == 1 and conf[0, 2] == 1 and conf[2, 2] == 1
    with pytest.raises(ValueError):
        confusion_matrix(np.array([3]), np.array([0]), 3)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0]), np.array([3]), 3)


def test_absent_class_is_nan_and_skipped_by_miou():
    conf = confusion_matrix(np.array([0, 0, 2]), np.array([0, 2, 2]), 3)
    scores = iou_from_confusion(conf)
    assert np.isnan(scores["iou"][1])
    assert scores["miou"] == pytest.approx((1 / 2 + 1 / 2) / 2)


def test_sem_seg_maps_prediction_255_to_background_and_cuts():
    gt = np.array([[0, 1, 255, 22]], dtype=np.uint8)
    pred = np.array([[255, 255, 1, 1]], dtype=np.uint8)
    conf = sem_seg_confusion([pred], [gt], 3)
    expected = np.zeros((3, 3), dtype=np.int64)
    expected[0, 0] = 1  # 255 -> background, correct
    expected[1, 0] = 1  # 255 -> background, gt class 1
    np.testing.assert_array_equal(conf, expected)  # gt 255 ignored, gt 22 cut away


def test_average_precision_known_examples():
    # scikit-learn's documented example: average_precision_score([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]).
    scores = np.array([[0.1], [0.4], [0.35], [0.8]])
    labels = np.array([[0], [0], [1], [1]])
    assert average_precision(scores, labels)["ap"][0] == pytest.approx(0.8333333333333333)

    # Column 0 perfect; column 1 all tied (one operating point: AP = prevalence); column 2 no positives.
    scores = np.array([[0.9, 0.5, 0.3], [0.8, 0.5, 0.2], [0.1, 0.5, 0.1], [0.0, 0.5, 0.0]])
    labels = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0]])
    result = average_precision(scores, labels)
    np.testing.assert_allclose(result["ap"][:2], [1.0, 0.5])
    assert np.isnan(result["ap"][2])
    assert result["map"] == pytest.approx(0.75)

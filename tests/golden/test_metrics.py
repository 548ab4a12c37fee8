"""Golden vectors of seed labels, the seed evaluation (per threshold and swept) and the mask evaluation."""

from __future__ import annotations

import numpy as np

from recam.eval.metrics import (
    IGNORE_INDEX,
    ThresholdSweep,
    confusion_matrix,
    iou_from_confusion,
    seed_label,
    sem_seg_confusion,
)

# Golden README: labels and confusions exact; iou, miou and among_predfg_bg rtol 1e-12, atol 0.
RTOL = 1e-12
# A fixed matrix size larger than the golden one, as the pipeline uses (21 on VOC): extra
# classes are absent, so their IoU is NaN and mIoU is unchanged.
EXTRA_LABELS = 3


def close(got, ref) -> bool:
    return np.allclose(got, ref, rtol=RTOL, atol=0, equal_nan=True)


def images(z: dict) -> range:
    return range(int(z["n_images"]))


def reference_size(labels: list[np.ndarray], gts: list[np.ndarray]) -> int:
    """The reference's matrix size: 1 + the largest label in any prediction or non-ignored gt."""
    largest = max(max(int(label.max()) for label in labels), max(int(gt[gt != IGNORE_INDEX].max()) for gt in gts))
    return largest + 1


def check_scores(scores: dict, z: dict, ti: int) -> None:
    assert close(scores["iou"], z[f"iou_t{ti}"])
    assert close(scores["miou"], z[f"miou_t{ti}"])
    assert close(scores["among_predfg_bg"], z[f"among_predfg_bg_t{ti}"])


def test_seed_labels_and_scores_per_threshold(golden):
    z = golden("cam_to_seed_label")
    gts = [z[f"gt_{i}"] for i in images(z)]
    for ti, threshold in enumerate(z["thresholds"]):
        labels = [seed_label(z[f"high_res_{i}"], z[f"keys_{i}"], float(threshold)) for i in images(z)]
        for i, label in enumerate(labels):
            assert label.dtype == np.int64
            np.testing.assert_array_equal(label, z[f"label_t{ti}_{i}"])

        size = reference_size(labels, gts)
        assert size == z[f"confusion_t{ti}"].shape[0]
        confusion = sum(confusion_matrix(gt, label, size) for gt, label in zip(gts, labels))
        np.testing.assert_array_equal(confusion, z[f"confusion_t{ti}"])
        check_scores(iou_from_confusion(confusion), z, ti)

        fixed = sum(confusion_matrix(gt, label, size + EXTRA_LABELS) for gt, label in zip(gts, labels))
        np.testing.assert_array_equal(fixed[:size, :size], z[f"confusion_t{ti}"])
        assert fixed.sum() == confusion.sum()
        scores = iou_from_confusion(fixed)
        assert np.isnan(scores["iou"][size:]).all()
        assert close(scores["iou"][:size], z[f"iou_t{ti}"])
        assert close(scores["miou"], z[f"miou_t{ti}"])
        assert close(scores["among_predfg_bg"], z[f"among_predfg_bg_t{ti}"])


def test_threshold_sweep(golden):
    z = golden("cam_to_seed_label")
    thresholds = z["thresholds"]
    size = z["confusion_t0"].shape[0]
    sweep = ThresholdSweep(thresholds, num_labels=size)
    for i in images(z):
        sweep.update(z[f"high_res_{i}"], z[f"keys_{i}"], z[f"gt_{i}"])
    result = sweep.results()
    for ti in range(len(thresholds)):
        np.testing.assert_array_equal(result["confusion"][ti], z[f"confusion_t{ti}"])
        check_scores({key: result[key][ti] for key in ("iou", "miou", "among_predfg_bg")}, z, ti)
    golden_miou = np.array([z[f"miou_t{ti}"] for ti in range(len(thresholds))])
    assert result["best_index"] == int(np.nanargmax(golden_miou))
    assert result["best_threshold"] == thresholds[result["best_index"]]


def test_sem_seg_eval(golden):
    z = golden("sem_seg_eval")
    preds = [z[f"pred_{i}"] for i in images(z)]
    gts = [z[f"gt_{i}"] for i in images(z)]
    assert any((pred == IGNORE_INDEX).any() for pred in preds)  # the 255 -> 0 mapping is exercised
    size = z["confusion"].shape[0]
    confusion = sem_seg_confusion(preds, gts, num_labels=size)
    np.testing.assert_array_equal(confusion, z["confusion"])
    scores = iou_from_confusion(confusion)
    for key in ("iou", "miou", "fp_bg", "fn_bg", "mean_fp_fg", "mean_fn_fg"):
        assert close(scores[key], z[key]), key

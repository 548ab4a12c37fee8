"""Seed labels, confusion matrices, IoU, the background-threshold sweep and classifier AP.

Numpy arrays in and out (spec §5 seed evaluation, §6d mask evaluation). Label maps use 0 for
background, k+1 for foreground class k (0-based `keys`), 255 for ignore. `num_labels` is the
number of label values, background included: 21 on PASCAL VOC.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

IGNORE_INDEX = 255


def _work_dtype(cams: np.ndarray) -> np.dtype:
    """Float type in which CAMs meet the threshold.

    The reference pads the float32 CAMs with the threshold (`np.pad`), which rounds the
    threshold to float32 before the argmax; we compare in the same type (float32, or wider
    if the CAMs are wider; float16 CAMs are widened to float32 exactly).
    """
    return np.promote_types(cams.dtype, np.float32)


def _label_lookup(keys: np.ndarray) -> np.ndarray:
    """`K' = [0, keys + 1]`: channel index (0 = background) -> label value."""
    return np.concatenate([[0], np.asarray(keys, dtype=np.int64) + 1])


def seed_label(high_res: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Seed label map from normalised CAMs and a background threshold (spec §5.1 step 2).

    high_res: (n, H, W) float CAMs of the image's classes, in [0, 1).
    keys: (n,) int 0-based classes of the channels.
    threshold: background score t.
    Returns (H, W) int64 in {0} ∪ {keys + 1}: a constant plane t is put in front of the CAMs,
    the argmax taken over planes (first maximum wins, so a tie goes to background) and mapped
    through `K' = [0, keys + 1]`. With n = 0 everything is background.
    """
    dtype = _work_dtype(high_res)
    cams = np.asarray(high_res, dtype=dtype)
    background = np.full((1,) + cams.shape[1:], threshold, dtype=dtype)
    channel = np.argmax(np.concatenate([background, cams], axis=0), axis=0)
    return _label_lookup(keys)[channel]


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_labels: int, ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """Confusion matrix `conf[gt, pred]` over the pixels whose ground truth is not ignored (spec §5.1 step 3).

    gt, pred: integer label maps of one shape (any number of dimensions), values in
    [0, num_labels) apart from `ignore_index` in gt.
    Returns (num_labels, num_labels) int64 counts, rows = ground truth, columns = prediction.
    Raises ValueError on a label outside [0, num_labels) (ignored gt pixels aside): the
    reference would grow its matrix there, so a fixed size must not hide such a value.
    """
    gt = np.asarray(gt).astype(np.int64, copy=False)
    pred = np.asarray(pred).astype(np.int64, copy=False)
    if gt.shape != pred.shape:
        raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ in shape")
    valid = gt != ignore_index
    gt_valid, pred_valid = gt[valid], pred[valid]
    for name, values in (("gt", gt_valid), ("pred", pred_valid)):
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(
                f"{name} has labels in [{values.min()}, {values.max()}], outside [0, {num_labels}) (ignore {ignore_index})"
            )
    counts = np.bincount(gt_valid * num_labels + pred_valid, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels)


def sem_seg_confusion(
    preds: Sequence[np.ndarray], gts: Sequence[np.ndarray], num_labels: int, ignore_index: int = IGNORE_INDEX
) -> np.ndarray:
    """Confusion matrix of pseudo-mask label images against ground truth (spec §6d).

    preds, gts: equally long sequences of (H_i, W_i) integer label maps.
    Returns (num_labels, num_labels) int64, summed over images. As in the reference, every
    `ignore_index` in a prediction first becomes 0 (background), ground-truth `ignore_index`
    pixels are skipped, and the matrix is cut to its first `num_labels` rows and columns: a
    pixel whose ground truth or prediction is >= num_labels is dropped, as the cut drops it.
    """
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
    total = np.zeros((num_labels, num_labels), dtype=np.int64)
    for pred, gt in zip(preds, gts):
        pred = np.where(np.asarray(pred) == ignore_index, 0, pred).astype(np.int64)
        gt = np.asarray(gt).astype(np.int64)
        if gt.shape != pred.shape:
            raise ValueError(f"gt {gt.shape} and pred {pred.shape} differ in shape")
        keep = (gt != ignore_index) & (gt < num_labels) & (pred < num_labels)
        total += confusion_matrix(gt[keep], pred[keep], num_labels, ignore_index)
    return total


def iou_from_confusion(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class IoU and the reference's diagnostics from confusion matrices (spec §5.1, §6d).

    confusion: (..., N, N) integer counts, rows = ground truth, columns = prediction; leading
    dimensions (e.g. one matrix per threshold) are kept in every output.
    With `den = row_sum + col_sum - diag`, per class (NaN where den is 0, a class absent from
    both ground truth and prediction):
      iou: (..., N) float64 `diag / den`; miou: (...) `nanmean(iou)` (NaN if all are NaN).
      fp: (..., N) `1 - row_sum / den` (share of the union predicted but not true);
      fn: (..., N) `1 - col_sum / den` (share of the union true but missed).
      fp_bg, fn_bg: (...) `fp[0]`, `fn[0]`; mean_fp_fg, mean_fn_fg: (...) plain means over
      classes 1.. (NaN if any is NaN), as the reference prints them.
      among_predfg_bg: (...) share of foreground-predicted pixels whose ground truth is
      background, `conf[0, 1:].sum() / conf[:, 1:].sum()` (NaN with no foreground prediction).
    """
    confusion = np.asarray(confusion, dtype=np.int64)
    row_sum = confusion.sum(axis=-1)
    col_sum = confusion.sum(axis=-2)
    diag = np.diagonal(confusion, axis1=-2, axis2=-1)
    den = row_sum + col_sum - diag
    predfg = confusion[..., :, 1:].sum(axis=(-2, -1))
    predfg_gtbg = confusion[..., 0, 1:].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / den
        fp = 1.0 - row_sum / den
        fn = 1.0 - col_sum / den
        among_predfg_bg = predfg_gtbg / predfg
        # nanmean by hand (the same zero-fill, sum and count as np.nanmean) so an all-NaN
        # row gives NaN without a RuntimeWarning.
        present = ~np.isnan(iou)
        miou = np.where(present, iou, 0.0).sum(axis=-1) / present.sum(axis=-1)
    return {
        "iou": iou,
        "miou": miou,
        "fp": fp,
        "fn": fn,
        "fp_bg": fp[..., 0],
        "fn_bg": fn[..., 0],
        "mean_fp_fg": fp[..., 1:].mean(axis=-1),
        "mean_fn_fg": fn[..., 1:].mean(axis=-1),
        "among_predfg_bg": among_predfg_bg,
    }


def sweep_confusions(
    high_res: np.ndarray,
    keys: np.ndarray,
    gt: np.ndarray,
    thresholds: Sequence[float] | np.ndarray,
    num_labels: int,
    ignore_index: int = IGNORE_INDEX,
) -> np.ndarray:
    """Confusion matrices of one image's seed labels at many background thresholds, in one pass.

    high_res: (n, H, W) float CAMs; keys: (n,) int 0-based classes; gt: (H, W) int labels
    (`ignore_index` skipped); thresholds: (T,) floats, any order, repeats allowed.
    Returns (T, num_labels, num_labels) int64, entry t equal (exactly) to
    `confusion_matrix(gt, seed_label(high_res, keys, thresholds[t]), num_labels)`.

    Why it is exact: `seed_label`'s argmax over [t, cams] is background iff the per-pixel CAM
    maximum m satisfies m <= t (a tie goes to background), and otherwise the label of the
    first maximal CAM, which does not depend on t. So each pixel is described by its
    foreground label and by j = number of thresholds < m (a `searchsorted` in the same float
    type as `seed_label`); it is background for the sorted thresholds j, j+1, ... and
    foreground below j. One histogram over (j, gt, fg_label) and a cumulative sum over j give
    every matrix: O(pixels * log T) instead of O(pixels * T).
    """
    dtype = _work_dtype(high_res)
    cams = np.asarray(high_res, dtype=dtype)
    gt = np.asarray(gt).astype(np.int64, copy=False)
    if cams.shape[1:] != gt.shape:
        raise ValueError(f"high_res {cams.shape} and gt {gt.shape} differ in spatial size")
    thresholds = np.asarray(thresholds, dtype=np.float64).reshape(-1)
    order = np.argsort(thresholds, kind="stable")
    sorted_thresholds = thresholds[order].astype(dtype)
    num_thresholds = thresholds.size

    valid = gt != ignore_index
    gt_valid = gt[valid]
    if gt_valid.size and (gt_valid.min() < 0 or gt_valid.max() >= num_labels):
        raise ValueError(f"gt has labels outside [0, {num_labels}) (ignore {ignore_index})")
    if cams.shape[0] == 0:
        # No classes: background at every threshold (j = 0 for every pixel).
        below = np.zeros(gt_valid.size, dtype=np.int64)
        fg_label = np.zeros(gt_valid.size, dtype=np.int64)
    else:
        pixels = cams[:, valid]
        fg_label = _label_lookup(keys)[np.argmax(pixels, axis=0) + 1]
        below = np.searchsorted(sorted_thresholds, pixels.max(axis=0), side="left")
    if fg_label.size and fg_label.max() >= num_labels:
        raise ValueError(f"keys {np.asarray(keys)} give labels outside [0, {num_labels})")

    cells = num_labels * num_labels
    codes = below * cells + gt_valid * num_labels + fg_label
    hist = np.bincount(codes, minlength=(num_thresholds + 1) * cells)
    hist = hist.reshape(num_thresholds + 1, num_labels, num_labels)
    cumulative = np.cumsum(hist, axis=0)
    # Sorted threshold i: pixels with j <= i are background, those with j > i keep fg_label.
    background = cumulative[:num_thresholds]
    confusions = cumulative[-1] - background
    confusions[:, :, 0] += background.sum(axis=-1)

    result = np.empty_like(confusions)
    result[order] = confusions
    return result


@dataclass
class ThresholdSweep:
    """Accumulates seed-label confusion matrices at many background thresholds (spec §5.2 sweep).

    `update` once per image (one pass over its pixels for all thresholds, see
    `sweep_confusions`); `results` turns the sums into per-threshold IoU and picks the best.
    """

    thresholds: np.ndarray
    num_labels: int
    ignore_index: int = IGNORE_INDEX
    confusions: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.thresholds = np.asarray(self.thresholds, dtype=np.float64).reshape(-1)
        if self.thresholds.size == 0:
            raise ValueError("ThresholdSweep needs at least one threshold")
        self.confusions = np.zeros((self.thresholds.size, self.num_labels, self.num_labels), dtype=np.int64)

    def update(self, high_res: np.ndarray, keys: np.ndarray, gt: np.ndarray) -> None:
        """Add one image: high_res (n, H, W) CAMs, keys (n,) classes, gt (H, W) labels."""
        self.confusions += sweep_confusions(high_res, keys, gt, self.thresholds, self.num_labels, self.ignore_index)

    def results(self) -> dict[str, np.ndarray | float | int]:
        """Per-threshold scores and the best threshold.

        Returns thresholds (T,), confusion (T, N, N), iou (T, N), miou (T,),
        among_predfg_bg (T,), and best_index / best_threshold / best_miou: the threshold of
        highest mIoU, the first in `thresholds` order on a tie. Raises ValueError if no pixel
        has been counted.
        """
        if self.confusions.sum() == 0:
            raise ValueError("ThresholdSweep.results: no pixel has been evaluated")
        scores = iou_from_confusion(self.confusions)
        best = int(np.nanargmax(scores["miou"]))
        return {
            "thresholds": self.thresholds,
            "confusion": self.confusions,
            "iou": scores["iou"],
            "miou": scores["miou"],
            "among_predfg_bg": scores["among_predfg_bg"],
            "best_index": best,
            "best_threshold": float(self.thresholds[best]),
            "best_miou": float(scores["miou"][best]),
        }


def average_precision(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray | float]:
    """Per-class non-interpolated average precision and its mean (classifier validation).

    scores: (N, K) float, higher = more confident; labels: (N, K) 0/1 ground truth.
    For each class, with images ranked by decreasing score and tied scores forming one
    operating point, `AP = sum_i (R_i - R_{i-1}) * P_i` over the operating points (recall R,
    precision P), the definition of scikit-learn's `average_precision_score`.
    Returns ap: (K,) float64, NaN for a class without positives; map: float, nanmean of ap
    (NaN if every class is NaN).
    """
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 2:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must both be (N, K)")
    ap = np.full(scores.shape[1], np.nan)
    for k in range(scores.shape[1]):
        order = np.argsort(-scores[:, k], kind="stable")
        ranked_scores = scores[order, k]
        positive = (labels[order, k] > 0).astype(np.float64)
        if positive.sum() == 0:
            continue
        # Last index of each run of equal scores: one operating point per distinct score.
        last = np.flatnonzero(np.append(np.diff(ranked_scores) != 0, True))
        true_pos = np.cumsum(positive)[last]
        precision = true_pos / (last + 1)
        recall = true_pos / true_pos[-1]
        ap[k] = np.sum(np.diff(recall, prepend=0.0) * precision)
    present = ~np.isnan(ap)
    mean_ap = float(ap[present].mean()) if present.any() else float("nan")
    return {"ap": ap, "map": mean_ap}

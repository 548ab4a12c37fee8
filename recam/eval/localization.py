"""Weakly-supervised object localization: boxes from maps, devkit IoU, loc accuracy (spg-spec.md §7).

Numpy arrays in and out. Boxes are `[x0, y0, x1, y1]` with inclusive integer pixel coordinates
(the ILSVRC devkit's convention). Two box protocols:

* `simple` (spec §7.4): foreground `map > float32(tau) * max` in float32, tight box of the largest
  8-connected component by pixel count (ties: the component whose first pixel comes first in
  raster order); golden case `wsol_boxes_metrics`.
* `cam_dt_box` (spec §7.3): a port of the CAM repository's `bboxgenerator/dt_box.cpp` on an 8-bit
  heat map; golden case `cam_dt_box`.

`MaxBoxAccV2` (Choe et al., CVPR 2020, "Evaluating Weakly Supervised Object Localization Methods
Right") is the mean over IoU thresholds (0.3, 0.5, 0.7) of the best box accuracy over the map
thresholds, where an image counts when *any* component's box reaches the IoU with any GT box.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

EIGHT = np.ones((3, 3), dtype=bool)  # 8-connectivity structure for ndimage.label
MAXBOXACC_IOUS = (0.3, 0.5, 0.7)


def devkit_iou(box: np.ndarray, gt_boxes: np.ndarray) -> np.ndarray:
    """ILSVRC-devkit overlap of one box with each of (G, 4) GT boxes, inclusive pixels.

    iw = min(x1) - max(x0) + 1, ih likewise; 0 when iw <= 0 or ih <= 0, else
    iw * ih / (area_a + area_b - iw * ih) with area = (x1 - x0 + 1)(y1 - y0 + 1). Returns (G,) float64.
    """
    box = np.asarray(box, dtype=np.float64)
    gt = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    iw = np.minimum(box[2], gt[:, 2]) - np.maximum(box[0], gt[:, 0]) + 1
    ih = np.minimum(box[3], gt[:, 3]) - np.maximum(box[1], gt[:, 1]) + 1
    inter = iw * ih
    union = (
        (box[2] - box[0] + 1) * (box[3] - box[1] + 1) + (gt[:, 2] - gt[:, 0] + 1) * (gt[:, 3] - gt[:, 1] + 1) - inter
    )
    return np.where((iw > 0) & (ih > 0), inter / np.where(union > 0, union, 1), 0.0)


def best_iou(box: np.ndarray, gt_boxes: np.ndarray) -> float:
    """Max devkit IoU over the image's GT boxes (0 with none), spec §7.2 "Several GT boxes"."""
    ious = devkit_iou(box, gt_boxes)
    return float(ious.max()) if ious.size else 0.0


def foreground(score_map: np.ndarray, threshold: float) -> np.ndarray:
    """`map > float32(tau) * max(map)`, in float32 (golden `wsol_boxes_metrics`). (H, W) -> bool."""
    score_map = np.asarray(score_map, dtype=np.float32)
    return score_map > np.float32(threshold) * score_map.max()


def _tight_box(ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    return np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.int64)


def component_boxes(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tight boxes and pixel counts of the 8-connected components of a (H, W) bool map.

    Returns ((n, 4) int64 boxes, (n,) int64 counts), components numbered in raster order of
    their first pixel (scipy's labelling order)."""
    labels, count = ndimage.label(fg, structure=EIGHT)
    if count == 0:
        return np.zeros((0, 4), dtype=np.int64), np.zeros(0, dtype=np.int64)
    slices = ndimage.find_objects(labels)
    boxes = np.array([[s[1].start, s[0].start, s[1].stop - 1, s[0].stop - 1] for s in slices], dtype=np.int64)
    sizes = np.bincount(labels.ravel(), minlength=count + 1)[1:].astype(np.int64)
    return boxes, sizes


def largest_component_box(fg: np.ndarray) -> tuple[np.ndarray, int]:
    """The `simple` protocol's box: tight inclusive box of the largest 8-connected component by
    pixel count (np.argmax keeps the first of equal counts = first in raster order); [0, 0, 0, 0]
    for an empty foreground. Returns (box (4,) int64, number of components)."""
    boxes, sizes = component_boxes(fg)
    if len(sizes) == 0:
        return np.zeros(4, dtype=np.int64), 0
    return boxes[int(np.argmax(sizes))], len(sizes)


def all_foreground_box(fg: np.ndarray) -> np.ndarray:
    """Box of every foreground pixel (the variant of some re-implementations; for comparison)."""
    ys, xs = np.nonzero(fg)
    return _tight_box(ys, xs) if len(ys) else np.zeros(4, dtype=np.int64)


def top_k_classes(scores: np.ndarray, k: int = 5) -> np.ndarray:
    """(N, K) scores -> (N, min(k, K)) classes, best first (stable: equal scores keep class order)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), axis=1, kind="stable")
    return order[:, :k]


def classification_accuracy(scores: np.ndarray, gt_class: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict[int, float]:
    """Top-k classification accuracy in percent, as the reference `Metrics.accuracy`."""
    top = top_k_classes(scores, max(ks))
    gt = np.asarray(gt_class)[:, None]
    return {k: 100.0 * float((top[:, :k] == gt).any(axis=1).mean()) for k in ks}


def localization_flags(
    gt_best_iou: np.ndarray, gt_class: np.ndarray, top5: np.ndarray | None, iou_threshold: float = 0.5
) -> dict[str, np.ndarray]:
    """Per image: GT-known (best IoU of the GT-class box >= 0.5), top-1 loc (and top5[0] == gt),
    top-5 loc (and gt in top5), spec §7.2. top5 None -> only "gt_known"."""
    known = np.asarray(gt_best_iou) >= iou_threshold
    flags = {"gt_known": known}
    if top5 is not None:
        gt = np.asarray(gt_class)
        flags["top1"] = known & (top5[:, 0] == gt)
        flags["top5"] = known & (top5 == gt[:, None]).any(axis=1)
    return flags


def loc_maps(class_maps: np.ndarray, eps: float = 0.0) -> np.ndarray:
    """The reference `get_localization_maps`: per-class min-max over the last two axes.
    eps = 0 is the reference (a constant map gives NaN, spec §10 quirk 17); the stages pass a
    tiny eps so a constant map reads as 0 instead."""
    class_maps = np.asarray(class_maps)
    low = class_maps.min(axis=(-2, -1), keepdims=True)
    high = class_maps.max(axis=(-2, -1), keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (class_maps - low) / (high - low + class_maps.dtype.type(eps))


def resize_bilinear(score_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(h, w) float32 -> (H, W) float32 with half-pixel centres and no antialiasing, i.e. OpenCV's
    `cv2.resize(..., INTER_LINEAR)` on float maps: s = max((o + 0.5) * n_in / n_out - 0.5, 0),
    neighbours floor(s) and min(floor(s) + 1, n_in - 1). Separable: rows, then columns."""
    score_map = np.asarray(score_map, dtype=np.float32)

    def weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        s = np.maximum((np.arange(n_out, dtype=np.float64) + 0.5) * n_in / n_out - 0.5, 0.0)
        i0 = np.minimum(np.floor(s).astype(np.int64), n_in - 1)
        i1 = np.minimum(i0 + 1, n_in - 1)
        return i0, i1, (s - i0).astype(np.float32)

    r0, r1, wr = weights(score_map.shape[0], size[0])
    c0, c1, wc = weights(score_map.shape[1], size[1])
    rows = score_map[r0] * (1 - wr)[:, None] + score_map[r1] * wr[:, None]
    return (rows[:, c0] * (1 - wc)[None] + rows[:, c1] * wc[None]).astype(np.float32)


def saved_heatmap(resized: np.ndarray) -> np.ndarray:
    """The reference validation PNG: floor(255 * norm(map)) in float32, as uint8 (spec §7.1)."""
    resized = np.asarray(resized, dtype=np.float32)
    low, high = resized.min(), resized.max()
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = (resized - low) / (high - low) * np.float32(255)
    return np.nan_to_num(scaled, nan=0.0).astype(np.int64).astype(np.uint8)


# ---------------------------------------------------------------- cam_dt_box (spec §7.3)


def dt_erode(binary: np.ndarray) -> np.ndarray:
    """dt_box's erosion: the exact Euclidean distance of each foreground pixel to the nearest
    background pixel (the border is not background), kept where floor(d * 255 / max d + 0.5) > 10.
    An all-true or all-false map is returned unchanged."""
    if binary.all() or not binary.any():
        return binary.copy()
    dist = ndimage.distance_transform_edt(binary).astype(np.float32)
    scaled = np.floor(dist * np.float32(255) / dist.max() + np.float32(0.5))
    return scaled > 10


def _clip_rect(x: int, y: int, w: int, h: int, height: int, width: int) -> tuple[int, int, int, int]:
    # dt_box.cpp clamps the corner to 5 pixels before the right/bottom border, and the size with
    # the *unclamped* corner: the rect never reaches the last 5 pixels.
    cx, cy = min(max(x, 0), width - 5), min(max(y, 0), height - 5)
    cw, ch = min(max(w, 0), width - x - 5), min(max(h, 0), height - y - 5)
    return cx, cy, cw, ch


def _rect_overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> int:
    iw = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    ih = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return iw * ih if iw > 0 and ih > 0 else 0


def dt_box_rects(heatmap: np.ndarray, thresholds: Sequence[int]) -> tuple[np.ndarray, list[np.ndarray]]:
    """All rects of dt_box on a (H, W) uint8 heat map for thresholds t0 < t1 < t2, after ranking
    by area (descending, stable) and merging (drop j when its overlap with i exceeds
    int(0.5 * max(area_i, area_j)); the loop then skips the rect that moved into j, as the C++ does).
    Returns ((r, 4) int64 rects as (x, y, w, h), the eroded bool maps per threshold)."""
    height, width = heatmap.shape
    rects, eroded = [], []
    for t in thresholds:
        e = dt_erode(heatmap > t)
        eroded.append(e)
        boxes, _ = component_boxes(e)
        for x0, y0, x1, y1 in boxes.tolist():
            rects.append(_clip_rect(x0, y0, x1 - x0 + 1, y1 - y0 + 1, height, width))
    rects.sort(key=lambda r: -(r[2] * r[3]))  # list.sort is stable
    i = 0
    while i < len(rects):
        j = i + 1
        while j < len(rects):
            limit = int(0.5 * max(rects[i][2] * rects[i][3], rects[j][2] * rects[j][3]))
            if _rect_overlap(rects[i], rects[j]) > limit:
                del rects[j]
            j += 1
        i += 1
    return np.array(rects, dtype=np.int64).reshape(-1, 4), eroded


def dt_box(heatmap: np.ndarray, thresholds: Sequence[int] = (20, 100, 110)) -> np.ndarray:
    """The box CAM's ILSVRC_evaluate_bbox.m takes: the first (largest) dt_box rect as
    [x, y, x + w, y + h] (one pixel wider and taller than tight); [0, 0, 0, 0] without rects."""
    rects, _ = dt_box_rects(heatmap, thresholds)
    if len(rects) == 0:
        return np.zeros(4, dtype=np.int64)
    x, y, w, h = rects[0].tolist()
    return np.array([x, y, x + w, y + h], dtype=np.int64)


# ---------------------------------------------------------------- accumulation over a split


class LocSweep:
    """Localization accuracy over a sweep of map thresholds, accumulated one (image, class) at a time.

    `update(score_map, gt_boxes, rank)`: score_map (H, W) min-max-normalised map of the class,
    gt_boxes (G, 4) inclusive boxes of that class, rank = position of the class among the
    image's predictions (0 = top-1; None when no scores are known). Per threshold tau:
    * gt_known: best IoU of the largest-component box (`simple`) >= 0.5;
    * top1 / top5: and rank < 1 / rank < 5 (only counted when ranks are known);
    * MaxBoxAccV2 counts: any component's box reaches IoU delta, for delta in MAXBOXACC_IOUS.
    """

    def __init__(self, thresholds: Sequence[float], iou_threshold: float = 0.5) -> None:
        self.thresholds = np.asarray(thresholds, dtype=np.float64)
        self.iou_threshold = iou_threshold
        t = len(self.thresholds)
        self.count = 0
        self.ranked = 0
        self.gt_known = np.zeros(t, dtype=np.int64)
        self.top1 = np.zeros(t, dtype=np.int64)
        self.top5 = np.zeros(t, dtype=np.int64)
        self.any_box = np.zeros((t, len(MAXBOXACC_IOUS)), dtype=np.int64)

    def update(self, score_map: np.ndarray, gt_boxes: np.ndarray, rank: int | None = None) -> None:
        self.count += 1
        self.ranked += rank is not None
        for i, tau in enumerate(self.thresholds):
            boxes, sizes = component_boxes(foreground(score_map, tau))
            if len(sizes) == 0:
                continue
            ious = np.array([best_iou(b, gt_boxes) for b in boxes])
            correct = ious[int(np.argmax(sizes))] >= self.iou_threshold
            self.gt_known[i] += correct
            if rank is not None and correct:
                self.top1[i] += rank < 1
                self.top5[i] += rank < 5
            self.any_box[i] += ious.max() >= np.asarray(MAXBOXACC_IOUS)

    def results(self) -> dict:
        """Fractions per threshold, the best threshold of GT-known loc, and MaxBoxAccV2."""
        n = max(self.count, 1)
        gt_known = self.gt_known / n
        best = int(np.argmax(gt_known))
        box_acc = self.any_box / n  # (T, deltas)
        out = {
            "pairs": self.count,
            "thresholds": self.thresholds.tolist(),
            "gt_known_loc_curve": gt_known.tolist(),
            "gt_known_loc": float(gt_known[best]),
            "best_threshold": float(self.thresholds[best]),
            "maxboxacc_v2": float(box_acc.max(axis=0).mean()),
            "maxboxacc_by_iou": {f"{d:.1f}": float(v) for d, v in zip(MAXBOXACC_IOUS, box_acc.max(axis=0))},
        }
        if self.ranked == self.count and self.count > 0:
            out["top1_loc"] = float(self.top1[best] / n)
            out["top5_loc"] = float(self.top5[best] / n)
            out["top1_loc_curve"] = (self.top1 / n).tolist()
        return out

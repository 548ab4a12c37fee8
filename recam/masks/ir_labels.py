"""Confident foreground/background labels for IRN training (spec §6a, reference `cam_to_ir_label`).

Numpy arrays in and out. Label values follow `recam.eval.metrics`: 0 background, k+1 for class k
(0-based `keys`), 255 unsure (IRN ignores those pixels).
"""

from __future__ import annotations

import numpy as np

from recam.eval.metrics import IGNORE_INDEX, seed_label
from recam.masks.crf import IR_LABEL_KERNELS, CrfKernels, crf_from_labels


def confident_labels(high_res: np.ndarray, keys: np.ndarray, threshold: float) -> np.ndarray:
    """Channel-index label map with a constant background plane (spec §6a steps 1 and 3).

    high_res: (n, H, W) float CAMs of the image's n classes; keys: (n,) their 0-based classes
      (only the count is used: the result is in the compact label space).
    threshold: background score (conf_fg_thres or conf_bg_thres).
    Returns (H, W) int64 in 0..n: argmax over [threshold plane, CAMs], the first maximum
    winning (a tie goes to background); with n = 0 all zeros.
    """
    high_res = np.asarray(high_res)
    if high_res.ndim != 3 or high_res.shape[0] != len(keys):
        raise ValueError(f"high_res {high_res.shape} must be (n, H, W) with n = len(keys) = {len(keys)}")
    # seed_label with keys 0..n-1 maps channel c to c (its K' is [0, 1..n]): the same argmax,
    # including the reference's float32 rounding of the threshold, without a second copy of it.
    return seed_label(high_res, np.arange(high_res.shape[0]), threshold)


def combine_ir_label(fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Merge the CRF-refined confident maps into the IR label (spec §6a step 4).

    fg, bg: (H, W) integer label maps in {0} ∪ {keys + 1} (already mapped through K').
    Returns (H, W) uint8: fg where fg > 0 (confident class), 255 where fg == 0 and bg > 0
    (unsure), 0 where both are 0 (confident background).
    """
    fg = np.asarray(fg)
    bg = np.asarray(bg)
    if fg.shape != bg.shape:
        raise ValueError(f"fg {fg.shape} and bg {bg.shape} differ in shape")
    if fg.size and (fg.min() < 0 or fg.max() >= IGNORE_INDEX):
        raise ValueError(f"fg labels span [{fg.min()}, {fg.max()}], outside [0, {IGNORE_INDEX})")
    label = fg.astype(np.uint8)
    label[(fg == 0) & (bg != 0)] = IGNORE_INDEX
    return label


def ir_label(
    image: np.ndarray,
    high_res: np.ndarray,
    keys: np.ndarray,
    *,
    fg_threshold: float = 0.35,
    bg_threshold: float = 0.10,
    gt_prob: float = 0.7,
    kernels: CrfKernels = IR_LABEL_KERNELS,
) -> np.ndarray:
    """IR label map of one image from its seeds (spec §6a; defaults are ReCAM's 0.35 / 0.10).

    image: (H, W, 3) uint8 RGB (not normalised); high_res: (n, H, W) float CAMs; keys: (n,)
    0-based classes.
    Steps: confident maps at fg_threshold and bg_threshold (`confident_labels`), each refined
    by `crf_from_labels` with n + 1 labels (label 0 a real label, zero_unsure False), mapped
    through K' = [0, keys + 1], then merged by `combine_ir_label`.
    Returns (H, W) uint8: 0 confident background, k+1 confident class k, 255 unsure.
    """
    keys = np.asarray(keys, dtype=np.int64)
    if keys.size == 0:
        # An image without labels (COCO's unannotated images): all confident background, without a
        # CRF, as step_coco/cam_to_ir_label writes it (spec §11.5, §11.10).
        return np.zeros(image.shape[:2], dtype=np.uint8)
    lookup = np.concatenate([[0], keys + 1])  # K': CRF label index -> label value
    refined = {}
    for name, threshold in (("fg", fg_threshold), ("bg", bg_threshold)):
        unary = confident_labels(high_res, keys, threshold)
        refined[name] = lookup[crf_from_labels(image, unary, len(lookup), gt_prob=gt_prob, kernels=kernels)]
    return combine_ir_label(refined["fg"], refined["bg"])

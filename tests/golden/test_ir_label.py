"""Golden vectors of the confident IR labels (spec §6a): unary maps exact; CRF maps and the final
IR label exact, since we use pydensecrf as the reference did (the README's rule for that case)."""

from __future__ import annotations

import numpy as np

from recam.masks.crf import crf_from_labels
from recam.masks.ir_labels import confident_labels, ir_label


def assert_equal(mine: np.ndarray, ref: np.ndarray, name: str) -> None:
    assert mine.shape == ref.shape and mine.dtype == ref.dtype, (
        f"{name}: {mine.shape} {mine.dtype} vs {ref.shape} {ref.dtype}"
    )
    diff = int((mine != ref).sum())
    assert diff == 0, f"{name}: {diff} of {ref.size} pixels differ"


def test_ir_label_matches_golden(golden):
    z = golden("ir_label")
    image, high_res, keys = z["image"], z["high_res"], z["keys"]
    fg_thresholds, bg_thresholds = z["conf_fg_thres"], z["conf_bg_thres"]
    n_labels = len(keys) + 1
    assert len(fg_thresholds) >= 1 and len(bg_thresholds) >= 1

    for side, thresholds in (("fg", fg_thresholds), ("bg", bg_thresholds)):
        for index, threshold in enumerate(thresholds):
            unary = confident_labels(high_res, keys, float(threshold))
            assert_equal(unary, z[f"{side}_unary_label_{side}{index}"], f"{side}_unary_label_{side}{index}")
            crf = crf_from_labels(image, unary, n_labels)
            assert_equal(crf, z[f"{side}_crf_label_{side}{index}"], f"{side}_crf_label_{side}{index}")

    for a, fg_threshold in enumerate(fg_thresholds):
        for b, bg_threshold in enumerate(bg_thresholds):
            got = ir_label(image, high_res, keys, fg_threshold=float(fg_threshold), bg_threshold=float(bg_threshold))
            assert_equal(got, z[f"ir_label_fg{a}_bg{b}"], f"ir_label_fg{a}_bg{b}")

"""The pretraining set (recam/data/pretrain_world.py): classes, determinism, labels."""

from __future__ import annotations

import numpy as np
import pytest

from recam.data.pretrain_world import (
    PARTS,
    SHAPES,
    TEXTURES,
    class_signatures,
    fingerprint,
    render_image,
    render_split,
)


def test_signatures_are_unique_and_stable_when_the_world_grows() -> None:
    small, large = class_signatures(20, seed=3), class_signatures(64, seed=3)
    assert large[:20] == small  # class c is drawn from its own stream
    keys = {(s.shape, s.texture, s.primary, s.part) for s in large}
    assert len(keys) == 64
    assert {s.shape for s in large} <= set(SHAPES) and {s.texture for s in large} <= set(TEXTURES)
    assert {s.part for s in large} <= set(PARTS)
    assert len({s.shape for s in large}) >= 6 and len({s.texture for s in large}) >= 6  # a shared vocabulary
    assert class_signatures(64, seed=4) != large


def test_images_are_deterministic_single_label_and_cycle_the_classes() -> None:
    a, label_a = render_image(0, "train", 5, 50, 48)
    b, label_b = render_image(0, "train", 5, 50, 48)
    assert a.dtype == np.uint8 and a.shape == (48, 48, 3)
    np.testing.assert_array_equal(a, b)
    assert label_a == label_b == 5
    assert render_image(0, "train", 55, 50, 48)[1] == 5  # index % num_classes
    other, _ = render_image(0, "val", 5, 50, 48)
    assert np.abs(other.astype(int) - a.astype(int)).mean() > 10  # each split is its own stream
    images, labels = render_split(0, "train", 12, 50, 48)
    np.testing.assert_array_equal(images[5], a)
    np.testing.assert_array_equal(labels, np.arange(12))


def test_the_fingerprint_names_the_rendered_bytes_not_the_process_count() -> None:
    images, labels = render_split(0, "train", 600, 50, 16)
    again, labels_again = render_split(0, "train", 600, 50, 16, workers=2)
    assert fingerprint(images, labels) == fingerprint(again, labels_again)
    moved = images.copy()
    moved[3, 2, 1, 0] ^= 1  # one grey level of one pixel
    assert fingerprint(moved, labels) != fingerprint(images, labels)
    assert fingerprint(images, np.roll(labels, 1)) != fingerprint(images, labels)


def test_images_vary_across_the_set() -> None:
    images = np.stack([render_image(1, "train", i, 8, 64)[0] for i in range(8)]).astype(np.float32)
    assert images.std(axis=0).mean() > 20  # varied images (backgrounds, objects, clutter)


def test_regime_checks_read_the_targets_from_the_summary() -> None:
    from recam.stages.report import regime_checks, regime_entry

    summary = {
        "eval_seeds/cam": {"miou": 0.48, "threshold": 0.15, "miou_fixed": 0.48, "threshold_fixed": 0.15},
        "eval_seeds/recam": {"miou": 0.55, "threshold": 0.21, "miou_fixed": 0.549, "threshold_fixed": 0.21},
        "eval_masks/irn": {"miou": 0.71, "miou_fixed": 0.70},
        "eval_seg/pseudo": {"miou": 0.66},
        "eval_seg/gt": {"miou": 0.76},
    }
    rows = regime_checks(summary)
    assert [r[2] for r in rows] == ["yes"] * 5
    assert rows[1][1] == "+7.00 points" and rows[4][1] == "86.8 %"
    summary["eval_seeds/cam"]["threshold"] = 0.72
    summary["eval_seg/pseudo"]["miou"] = 0.5
    assert [r[2] for r in regime_checks(summary)] == ["no", "yes", "yes", "yes", "no"]
    assert regime_checks({}) == []
    entry = regime_entry(summary)  # summary.json's report/regime: the numbers and verdicts
    assert entry["targets_met"] == 3 and entry["targets"] == 5
    assert entry["cam_best_t"] == 0.72 and entry["gain_best_t"] == pytest.approx(7.0)
    assert entry["seg_pseudo_over_gt"] == pytest.approx(0.5 / 0.76, abs=1e-6)
    assert entry["met"] == {
        "cam_best_t": False,
        "gain_best_t": True,
        "gain_fixed_t": True,
        "masks_minus_seeds": True,
        "seg_pseudo_over_gt": False,
    }
    assert regime_entry({}) is None

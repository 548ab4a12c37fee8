"""The pretraining set (recam/data/pretrain_world.py): classes, determinism, labels."""

from __future__ import annotations

import numpy as np

from recam.data.pretrain_world import PARTS, SHAPES, TEXTURES, class_signatures, render_image, render_split


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


def test_images_vary_across_the_set() -> None:
    images = np.stack([render_image(1, "train", i, 8, 64)[0] for i in range(8)]).astype(np.float32)
    assert images.std(axis=0).mean() > 20  # varied images (backgrounds, objects, clutter)

"""SPG golden vectors: list parsing and the train/test transforms (data_pipeline)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from recam.config import IMAGENET_MEAN, IMAGENET_STD
from recam.data.wsol import parse_list_line, resize_short, spg_test_transform, spg_train_transform


def test_list_parsing(golden_spg):
    z = golden_spg("data_pipeline")
    parsed = [parse_list_line(line) for line in z["list_lines"].tolist()]
    assert [name for name, _ in parsed] == z["parsed_names"].tolist()
    np.testing.assert_array_equal(np.array([label for _, label in parsed], dtype=np.float32), z["parsed_labels"])


def test_transforms(golden_spg):
    z = golden_spg("data_pipeline")
    resize, crop = int(z["input_size"]), int(z["crop_size"])
    i = 0
    while f"image_{i}" in z:
        image = Image.fromarray(z[f"image_{i}"])
        np.testing.assert_array_equal(np.asarray(resize_short(image, resize)), z[f"resized_{i}"])
        test = spg_test_transform(image, resize, crop, IMAGENET_MEAN, IMAGENET_STD).numpy()
        np.testing.assert_allclose(test, z[f"test_tensor_{i}"], rtol=0, atol=1e-6)
        offsets = tuple(int(v) for v in z[f"train_crop_ij_{i}"])
        train = spg_train_transform(
            image, resize, crop, IMAGENET_MEAN, IMAGENET_STD, offsets=offsets, flip=bool(z[f"train_flip_{i}"])
        ).numpy()
        np.testing.assert_allclose(train, z[f"train_tensor_{i}"], rtol=0, atol=1e-6)
        i += 1
    assert i >= 3

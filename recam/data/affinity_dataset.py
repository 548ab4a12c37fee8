"""Images with stride-4 label maps for IRN training and validation (spec §6b, "Data").

train=True (reference VOC12AffinityDataset): read RGB and label -> random_scale(lo, hi), image
bicubic and label nearest -> normalise -> hflip -> random_crop(S; image pad 0, label pad 255) ->
label reduced to the stride-4 grid (PIL nearest, `reduce_label`).
train=False: normalise -> top-left crop S (pads 0 / 255) -> reduce. Deterministic.
Item: {"image": (3, S, S) float32, "label": (S/4, S/4) uint8, "id": str}. The pair labels are
made on the device from "label" (`affinity_labels_torch`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from recam.data import transforms as T
from recam.data.datasets import read_image, sample_rng
from recam.masks.affinity import reduce_label


class AffinityDataset(Dataset):
    """`load_label(id)` -> (H, W) uint8 label of the image (IR label PNG, or GT mask for val)."""

    def __init__(self, root: str, ids: Sequence[str], load_label: Callable[[str], np.ndarray], *,
                 train: bool, crop_size: int, scale_range: Sequence[float], mean: Sequence[float],
                 std: Sequence[float], seed: int = 0) -> None:
        self.root, self.ids, self.load_label = root, list(ids), load_label
        self.train, self.crop_size, self.scale_range = train, crop_size, tuple(scale_range)
        self.mean, self.std, self.seed, self.epoch = tuple(mean), tuple(std), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image, label = read_image(self.root, image_id), self.load_label(image_id)
        if image.shape[:2] != label.shape:
            raise ValueError(f"label of {image_id} is {label.shape}, image {image.shape[:2]}")
        if self.train:
            rng = sample_rng(self.seed, self.epoch, index)
            image, label = T.random_scale(image, label, *self.scale_range, rng)
            image = T.normalize(image, self.mean, self.std)
            image, label = T.random_hflip([image, label], rng)
            image, label = T.random_crop([image, label], self.crop_size, [0.0, T.IGNORE], rng)
        else:
            image = T.top_left_crop(T.normalize(image, self.mean, self.std), self.crop_size, 0.0)
            label = T.top_left_crop(label, self.crop_size, T.IGNORE)
        return {"image": torch.from_numpy(T.to_chw(image)), "label": torch.from_numpy(reduce_label(label)),
                "id": image_id}

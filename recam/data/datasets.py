"""Torch datasets over a VOC-layout folder (real VOC 2012 or the synthetic set), spec §1.6.

Random augmentation draws from `np.random.default_rng([seed, epoch, index])`: a sample's crop and
flip depend on the seed, the epoch (`set_epoch`) and its index only, so results do not change
with the number of DataLoader workers.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import Dataset

from recam.data import transforms as T
from recam.data.voc12 import image_path
from recam.errors import RecamInputError
from recam.io import load_rgb


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def read_image(root: str, image_id: str) -> np.ndarray:
    return load_rgb(image_path(root, image_id))


def image_size(root: str, image_id: str) -> tuple[int, int]:
    """(H, W) from the file header, without decoding the pixels."""
    path = image_path(root, image_id)
    try:
        with Image.open(path) as image:
            width, height = image.size
    except OSError as err:
        raise RecamInputError(f"recam: image {path} is unreadable or corrupt ({err})") from err
    return height, width


class ClassificationDataset(Dataset):
    """Images with multi-hot labels for the classifier stages (spec §1.6).

    train=True:  read RGB -> resize_long(lo, hi) -> normalise -> hflip -> random_crop(S, pad 0)
    train=False: read RGB -> normalise -> top_left_crop(S, pad 0)   (the reference "validation")
    Item: {"image": (3, S, S) float32, "label": (K,) float32, "id": str}.
    """

    def __init__(self, root: str, ids: Sequence[str], labels: dict[str, np.ndarray], *, train: bool,
                 crop_size: int, resize_long: Sequence[int], mean: Sequence[float],
                 std: Sequence[float], seed: int = 0) -> None:
        missing = [i for i in ids if i not in labels]
        if missing:
            raise RecamInputError(f"recam: {len(missing)} ids have no image-level label (e.g. {missing[0]}); "
                                  "re-run stage=prepare")
        self.root, self.ids, self.labels = root, list(ids), labels
        self.train, self.crop_size, self.resize_long = train, crop_size, tuple(resize_long)
        self.mean, self.std, self.seed, self.epoch = tuple(mean), tuple(std), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image = read_image(self.root, image_id)
        if self.train:
            rng = sample_rng(self.seed, self.epoch, index)
            image = T.resize_long(image, *self.resize_long, rng)
            image = T.normalize(image, self.mean, self.std)
            (image,) = T.random_hflip([image], rng)
            (image,) = T.random_crop([image], self.crop_size, [0.0], rng)
        else:
            image = T.top_left_crop(T.normalize(image, self.mean, self.std), self.crop_size, 0.0)
        return {"image": torch.from_numpy(T.to_chw(image)),
                "label": torch.from_numpy(self.labels[image_id].astype(np.float32)),
                "id": image_id}


class MultiScaleDataset(Dataset):
    """Full-size images at several scales for seed export (spec §1.6 multi-scale inference).

    Item: {"id", "size": (H, W), "label": (K,) float32, "images": [(3, Hs, Ws) float32 per scale]}.
    The mirror is added at batching time (the flip pair runs as one batch).
    """

    def __init__(self, root: str, ids: Sequence[str], labels: dict[str, np.ndarray],
                 scales: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 on_device: bool = False) -> None:
        self.root, self.ids, self.labels = root, list(ids), labels
        self.scales, self.mean, self.std = tuple(scales), tuple(mean), tuple(std)
        self.on_device = on_device  # "images" = [the decoded (3, H, W) uint8 image]: `device_multiscale` rescales

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict:
        image_id = self.ids[index]
        image = read_image(self.root, image_id)
        return {"id": image_id, "size": image.shape[:2], "label": self.labels[image_id].astype(np.float32),
                "images": [torch.from_numpy(T.to_chw(image))] if self.on_device
                else multiscale_inputs(image, self.scales, self.mean, self.std)}


def multiscale_inputs(image: np.ndarray, scales: Sequence[float], mean: Sequence[float],
                      std: Sequence[float]) -> list[torch.Tensor]:
    """RGB uint8 (H, W, 3) -> one normalised (3, Hs, Ws) float32 tensor per scale (PIL bicubic
    rescale to round-half-even sizes, skipped for scale 1; spec §1.6)."""
    return [torch.from_numpy(T.to_chw(T.normalize(image if scale == 1.0 else T.pil_rescale(image, scale), mean, std)))
            for scale in scales]


def device_multiscale(images: torch.Tensor, scales: Sequence[float], mean: Sequence[float],
                      std: Sequence[float]) -> list[torch.Tensor]:
    """(n, 3, H, W) uint8 on any device -> one normalised (n, 3, Hs, Ws) float32 batch per scale,
    computed where `images` lie: `multiscale_inputs` with torch's antialiased bicubic (PIL's kernel,
    a = -0.5) rounded to grey levels, and the normalisation in float32. The sizes are the
    reference's; the pixels of a rescaled image differ from PIL's by at most a grey level or two
    (rounding), scale 1 is equal to float32 rounding."""
    height, width = images.shape[-2:]
    pixels = images.float()
    mean_t = torch.tensor(mean, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=images.device, dtype=torch.float32).view(1, 3, 1, 1)
    out = []
    for scale in scales:
        size = T.scaled_size(height, width, scale)
        x = pixels
        if size != (height, width):
            x = F.interpolate(pixels, size=size, mode="bicubic", antialias=True, align_corners=False)
            x = x.round_().clamp_(0, 255)
        out.append((x / 255.0 - mean_t) / std_t)
    return out


def size_buckets(sizes: Sequence[tuple[int, int]], bucket_size: int) -> list[list[int]]:
    """Group indices of equal (H, W) into batches of at most `bucket_size` (no padding needed,
    so a bucketed forward gives the same numbers as one image at a time). Order: by first
    appearance of each size, then index."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, size in enumerate(sizes):
        groups[tuple(size)].append(index)
    return [members[i:i + bucket_size] for members in groups.values()
            for i in range(0, len(members), max(1, bucket_size))]


def collate_multiscale(samples: list[dict]) -> dict:
    """Stack samples of one size bucket: images[s] is (n, 3, Hs, Ws) per scale."""
    return {"ids": [s["id"] for s in samples], "size": samples[0]["size"],
            "labels": np.stack([s["label"] for s in samples]),
            "images": [torch.stack([s["images"][j] for s in samples]) for j in range(len(samples[0]["images"]))]}

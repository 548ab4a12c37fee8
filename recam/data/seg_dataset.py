"""Images with label maps for DeepLab training (spec §7.1, "Train aug" and "Labels").

The label of an id is a uint8 PNG (a pseudo mask of stage `masks`, or a ground-truth mask) whose
values must be 0..K or 255; anything else stops with one line naming the file (spec §7.2: users
hit NaN losses with bad pseudo masks).

Augmentation, as deeplab-pytorch's `_augmentation`: a scale drawn from a discrete set, size
(int(H*s), int(W*s)), the image bilinear (cv2 INTER_LINEAR; here torch's bilinear with half-pixel
centres and no antialiasing, the same formula) and the label nearest (PIL); pad bottom/right to
the crop with the mean colour (0 after normalisation) and 255; a random crop; hflip p = 0.5.
Deviation (spec §7.4): RGB with ImageNet mean/std, not BGR mean subtraction, to match torchvision's
weights.

Random draws come from `sample_rng(seed, epoch, index)`. The dataset is indexed by
`(index, epoch)` keys (`StepBatchSampler` makes them), so a sample's augmentation does not depend
on the number of workers or on where a resumed run starts.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from recam.data import transforms as T
from recam.data.datasets import image_size, read_image, sample_rng
from recam.errors import RecamInputError
from recam.io import load_label_png


def check_label_values(label: np.ndarray, num_labels: int, source: str | Path) -> None:
    """Raise one line naming `source` unless every value of `label` is in 0..num_labels-1 or 255."""
    values = np.unique(label)
    bad = values[(values >= num_labels) & (values != T.IGNORE)]
    if bad.size:
        raise RecamInputError(
            f"recam: label file {source} has values {bad[:8].tolist()} - labels must be 0..{num_labels - 1} "
            f"(background + {num_labels - 1} classes) or 255 (ignore); re-make the file")


def read_label(path: Path, num_labels: int) -> np.ndarray:
    """A label PNG as (H, W) uint8, checked with `check_label_values`."""
    label = load_label_png(path)
    check_label_values(label, num_labels, path)
    return label


def check_label_files(root: str, ids: Sequence[str], label_path: Callable[[str], Path], num_labels: int,
                      *, read: bool = True) -> None:
    """Before training: every id has a label file of its image's size with valid values (one
    `RecamInputError` line for the first problem). read=False only checks that the files exist."""
    for image_id in ids:
        path = label_path(image_id)
        if not path.is_file():
            raise RecamInputError(f"recam: no label file for {image_id} ({path} is missing) - every training id "
                                  f"needs one; re-run the stage that makes them")
        if read:
            label = read_label(path, num_labels)
            if label.shape != image_size(root, image_id):
                raise RecamInputError(f"recam: label file {path} is {label.shape[1]}x{label.shape[0]} but its image "
                                      f"is {image_size(root, image_id)[1]}x{image_size(root, image_id)[0]} - re-make it")


def scale_pair(image: np.ndarray, label: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Rescale an (H, W, 3) uint8 image (bilinear, float32 out) and its (H, W) label (nearest) to
    (int(H*s), int(W*s)), as deeplab-pytorch (cv2 linear for the image, PIL nearest for the label)."""
    height, width = label.shape
    size = (max(1, int(height * scale)), max(1, int(width * scale)))
    if size == (height, width):
        return image.astype(np.float32), label
    chw = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None]
    scaled = F.interpolate(chw, size=size, mode="bilinear", align_corners=False, antialias=False)
    return scaled[0].permute(1, 2, 0).numpy(), T.pil_resize(label, size, nearest=True)


def pad_and_crop(image: np.ndarray, label: np.ndarray, crop: int,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Pad bottom/right to at least crop x crop (image 0 = the mean colour after normalisation,
    label 255), then take a random crop x crop window (deeplab-pytorch, spec §7.1)."""
    height, width = label.shape
    pad_h, pad_w = max(crop - height, 0), max(crop - width, 0)
    if pad_h or pad_w:
        image = np.pad(image, ((0, pad_h), (0, pad_w), (0, 0)), constant_values=0.0)
        label = np.pad(label, ((0, pad_h), (0, pad_w)), constant_values=T.IGNORE)
    top = int(rng.integers(0, label.shape[0] - crop + 1))
    left = int(rng.integers(0, label.shape[1] - crop + 1))
    return image[top:top + crop, left:left + crop], label[top:top + crop, left:left + crop]


class SegTrainDataset(Dataset):
    """Training crops: item {"image": (3, S, S) float32, "label": (S, S) int64, "id": str}.

    `label_path(id)` gives the label PNG of an id; num_labels = K + 1 (background included).
    Indexed by `(index, epoch)` (or a plain index, epoch 0).
    """

    def __init__(self, root: str, ids: Sequence[str], label_path: Callable[[str], Path], *, num_labels: int,
                 crop_size: int, scales: Sequence[float], mean: Sequence[float], std: Sequence[float],
                 seed: int = 0) -> None:
        self.root, self.ids, self.label_path, self.num_labels = root, list(ids), label_path, num_labels
        self.crop_size, self.scales = crop_size, tuple(float(s) for s in scales)
        self.mean, self.std, self.seed = tuple(mean), tuple(std), seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        image_id = self.ids[index]
        path = self.label_path(image_id)
        image, label = read_image(self.root, image_id), read_label(path, self.num_labels)
        if image.shape[:2] != label.shape:
            raise RecamInputError(f"recam: label file {path} is {label.shape} but its image is {image.shape[:2]}")
        rng = sample_rng(self.seed, epoch, index)
        image, label = scale_pair(image, label, self.scales[int(rng.integers(len(self.scales)))])
        image = T.normalize(image, self.mean, self.std)
        image, label = pad_and_crop(image, label, self.crop_size, rng)
        image, label = T.random_hflip([image, label], rng)
        return {"image": torch.from_numpy(T.to_chw(image)), "label": torch.from_numpy(label.astype(np.int64)),
                "id": image_id}

"""Image/label transforms of the reference pipeline (spec §1.4-1.5), on numpy arrays.

Every random transform takes an explicit `np.random.Generator`, so a sample's augmentation
depends only on (seed, epoch, index) and not on the number of DataLoader workers.
Images are HWC uint8 before `normalize` and HWC float32 after; labels are HW uint8.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

IGNORE = 255


def scaled_size(height: int, width: int, scale: float) -> tuple[int, int]:
    """(round(H*s), round(W*s)) with numpy's round-half-even, as the reference's pil_rescale."""
    return int(np.round(height * scale)), int(np.round(width * scale))


def pil_resize(array: np.ndarray, size: tuple[int, int], *, nearest: bool = False) -> np.ndarray:
    """Resize an HWC uint8 image (bicubic) or an HW label (nearest) with PIL to size=(H, W)."""
    height, width = size
    if array.shape[:2] == (height, width):
        return array
    resample = Image.NEAREST if nearest else Image.BICUBIC
    return np.asarray(Image.fromarray(array).resize((width, height), resample=resample))


def pil_rescale(array: np.ndarray, scale: float, *, nearest: bool = False) -> np.ndarray:
    """Rescale by a factor (spec §1.5 pil_rescale): bicubic for images, nearest for labels."""
    return pil_resize(array, scaled_size(array.shape[0], array.shape[1], scale), nearest=nearest)


def resize_long(image: np.ndarray, low: int, high: int, rng: np.random.Generator) -> np.ndarray:
    """Scale so the longer side is L ~ U{low..high} (both ends included), bicubic (spec §1.5)."""
    target = int(rng.integers(low, high + 1))
    height, width = image.shape[:2]
    scale = target / height if width < height else target / width
    return pil_rescale(image, scale)


def random_scale(image: np.ndarray, label: np.ndarray | None, low: float, high: float,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray | None]:
    """Rescale image (bicubic) and label (nearest) by one s ~ U[low, high] (spec §1.5)."""
    scale = float(rng.uniform(low, high))
    image = pil_rescale(image, scale)
    return image, (None if label is None else pil_rescale(label, scale, nearest=True))


def normalize(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """(x/255 - mean)/std per channel, computed in float64 and stored float32 (golden net_input)."""
    out = (image.astype(np.float64) / 255.0 - np.asarray(mean)) / np.asarray(std)
    return out.astype(np.float32)


def random_hflip(arrays: list[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """Mirror all arrays left-right together with probability 0.5."""
    if rng.random() < 0.5:
        return [np.ascontiguousarray(a[:, ::-1]) for a in arrays]
    return arrays


def _crop_axis(size: int, crop: int, rng: np.random.Generator) -> tuple[int, int, int]:
    """(canvas offset, image offset, length) on one axis: a random window if the image is larger,
    a random placement inside the canvas if smaller (the padding is split randomly, spec §1.5)."""
    if size > crop:
        return 0, int(rng.integers(0, size - crop + 1)), crop
    return int(rng.integers(0, crop - size + 1)), 0, size


def random_crop(arrays: list[np.ndarray], crop: int, pads: Sequence[float],
                rng: np.random.Generator) -> list[np.ndarray]:
    """Crop/pad every array to crop x crop with one shared random box (spec §1.5 random_crop).

    arrays: HWC images and/or HW labels of equal H, W; pads: fill value per array (0 for
    normalised images = the mean colour, 255 for labels).
    """
    height, width = arrays[0].shape[:2]
    ct, it, h = _crop_axis(height, crop, rng)
    cl, il, w = _crop_axis(width, crop, rng)
    out = []
    for array, pad in zip(arrays, pads):
        canvas = np.full((crop, crop) + array.shape[2:], pad, dtype=array.dtype)
        canvas[ct:ct + h, cl:cl + w] = array[it:it + h, il:il + w]
        out.append(canvas)
    return out


def top_left_crop(array: np.ndarray, crop: int, pad: float) -> np.ndarray:
    """Place the array at (0, 0) on a crop x crop canvas of `pad`, cutting what lies beyond."""
    canvas = np.full((crop, crop) + array.shape[2:], pad, dtype=array.dtype)
    h, w = min(crop, array.shape[0]), min(crop, array.shape[1])
    canvas[:h, :w] = array[:h, :w]
    return canvas


def to_chw(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image.transpose(2, 0, 1))

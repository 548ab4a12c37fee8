"""Flip and multi-scale fusion of class maps into the saved seed CAMs (spec §4.1-§4.3).

Torch tensors in and out, on whatever device they come; no file IO. The stage that exports
seeds runs the network per scale and hands the fused maps to `fuse_scales`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

# The reference adds 1e-5 to every per-class maximum before dividing (spec §4.3), so an
# all-zero map stays zero and a positive one tops out just below 1.
NORM_EPS = 1e-5
# The network's output stride; the full-resolution maps are resized to a multiple of it.
NET_STRIDE = 16
# The stride of the saved low-resolution `cam` (used by the random walk).
CAM_STRIDE = 4


def fuse_flip(raw: Tensor) -> Tensor:
    """Fuse the class maps of an image and of its mirror (spec §4.2 steps 3-4).

    raw: (2, K, h, w) float, the 1x1 class-map convolution before ReLU of [image, mirror(image)].
    Returns (K, h, w): `relu(raw[0]) + mirror(relu(raw[1]))`, mirror = flip of the width axis.
    A sum, not a mean, as in the reference; the later max normalisation removes the factor.
    """
    if raw.dim() != 4 or raw.shape[0] != 2:
        raise ValueError(f"raw must be (2, K, h, w) for [image, mirror], got {tuple(raw.shape)}")
    return F.relu(raw[0]) + F.relu(raw[1]).flip(-1)


def strided_size(height: int, width: int, stride: int) -> tuple[int, int]:
    """Output size of a stride-`stride` grid over an image (spec §4.3): `((H-1)//s + 1, (W-1)//s + 1)`."""
    return (height - 1) // stride + 1, (width - 1) // stride + 1


def padded_up_size(height: int, width: int, stride: int = NET_STRIDE) -> tuple[int, int]:
    """Input size covered by a stride-`stride` output grid (spec §4.3): `(ceil(H/s)*s, ceil(W/s)*s)`."""
    grid_h, grid_w = strided_size(height, width, stride)
    return grid_h * stride, grid_w * stride


def combine_weights(classifier_weight: Tensor, predictor_weight: Tensor) -> Tensor:
    """The ReCAM inference class-map weight `W ⊙ V` (spec §4.1).

    classifier_weight: `W`, predictor_weight: `V`, both (K, C) or both (K, C, 1, 1) 1x1-conv
    weights. Returns their element-wise product, same shape. The reference uses this product,
    neither `V` alone nor `W` alone (except on COCO, where it uses `W`).
    """
    if classifier_weight.shape != predictor_weight.shape:
        raise ValueError(
            f"classifier weight {tuple(classifier_weight.shape)} and predictor weight "
            f"{tuple(predictor_weight.shape)} differ in shape"
        )
    return classifier_weight * predictor_weight


def keys_from_label(label: Tensor) -> Tensor:
    """0-based indices of an image's positive classes, ascending.

    label: (K,) multi-hot (any dtype). Returns (n,) int64 on the label's device: the classes
    whose label is > 0 (the reference's `nonzero(label)` on a 0/1 label).
    """
    return torch.nonzero(label > 0).flatten()


def fuse_scales(
    fused_per_scale: Sequence[Tensor],
    image_size: tuple[int, int],
    keys: Tensor | Sequence[int],
) -> dict[str, Tensor]:
    """Sum flip-fused maps over scales, keep the image's classes, max-normalise (spec §4.3).

    fused_per_scale: one (K, h_s, w_s) float tensor per scale, from `fuse_flip`.
    image_size: (H, W) of the original image.
    keys: (n,) int64 0-based classes to keep (from `keys_from_label`), ascending.

    Returns a dict:
      cam: (n, h4, w4), (h4, w4) = `strided_size(H, W, 4)`: each scale resized bilinearly
        (align_corners=False) straight to (h4, w4), summed over scales.
      high_res: (n, H, W): each scale resized to `padded_up_size(H, W, 16)`, summed, then
        cropped to [:H, :W]. Resizing to the padded size and cropping is what the reference
        does; it is not the same as resizing straight to (H, W).
    Both are divided per class by `(their spatial max + 1e-5)`, so values lie in [0, 1).
    Channels are selected before resizing: bilinear resizing treats channels independently,
    so the numbers are those of resizing all K and selecting afterwards, at n/K of the cost.
    """
    if len(fused_per_scale) == 0:
        raise ValueError("fuse_scales needs at least one scale")
    height, width = int(image_size[0]), int(image_size[1])
    first = fused_per_scale[0]
    keys = torch.as_tensor(keys, dtype=torch.int64, device=first.device)
    selected = [fused[keys].unsqueeze(0) for fused in fused_per_scale]

    low_size = strided_size(height, width, CAM_STRIDE)
    up_size = padded_up_size(height, width, NET_STRIDE)
    if keys.numel() == 0:
        # An image without labels (COCO's 702 unannotated train images, spec §11.5): empty maps, as
        # the guard of the reference's step_coco/make_recam writes; interpolate rejects 0 channels.
        return {"cam": first.new_zeros((0, *low_size)), "high_res": first.new_zeros((0, height, width))}
    # Sum through stack + sum, as the reference does, so the addition order (and the float
    # rounding) is the same.
    cam = torch.stack(
        [F.interpolate(maps, size=low_size, mode="bilinear", align_corners=False)[0] for maps in selected]
    ).sum(dim=0)
    high_res = torch.stack(
        [F.interpolate(maps, size=up_size, mode="bilinear", align_corners=False)[0] for maps in selected]
    ).sum(dim=0)[:, :height, :width]
    return {"cam": _normalize_per_class(cam), "high_res": _normalize_per_class(high_res)}


def _normalize_per_class(maps: Tensor) -> Tensor:
    """(n, h, w) -> maps / (per-map spatial max + 1e-5); n may be 0."""
    if maps.shape[0] == 0:
        return maps
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + NORM_EPS)

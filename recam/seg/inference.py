"""Segmentation inference: class probabilities of a full image, optional test-time scales and flip,
optional dense-CRF post-processing (spec §7.1 "Test" and "CRF").

The reference test (deeplab-pytorch): the full image, batch 1, the MSC max-fused logits
(scales 1, 0.5, 0.75 inside the model), bilinear upsampling (align_corners False) to the image
size, softmax, argmax; no flip. `scales=(1.0,)`, `flip=False` is exactly that. Extra test scales
and the flip average the softmax probabilities of every (scale, flip) pass, each upsampled to the
image size first.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recam.masks.crf import DEEPLAB_KERNELS, CrfKernels, crf_from_probs
from recam.models.advcam import CAFFE_BGR_MEAN

CRF_IMAGES = ("clean", "reference")


@torch.no_grad()
def predict_probs(model: nn.Module, image: Tensor, *, scales: Sequence[float] = (1.0,), flip: bool = False) -> Tensor:
    """Softmax probabilities (C, H, W) float32 of one normalised image (1, 3, H, W).

    `model` in eval mode returns logits (N, C, h, w) at any stride. For each scale s the image is
    resized bilinearly by s (size floor(H*s), skipped for s = 1), passed with its mirror when
    `flip`, the logits upsampled bilinearly to (H, W) (the mirror's flipped back) and softmaxed;
    the result is the mean over all passes.
    """
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"image must be (1, 3, H, W), got {tuple(image.shape)}")
    height, width = image.shape[-2:]
    total, passes = None, 0
    for scale in scales:
        x = (
            image
            if scale == 1.0
            else F.interpolate(
                image, scale_factor=scale, mode="bilinear", align_corners=False, recompute_scale_factor=False
            )
        )
        if flip:
            x = torch.cat([x, x.flip(-1)])
        logits = F.interpolate(model(x).float(), size=(height, width), mode="bilinear", align_corners=False)
        probs = logits.softmax(dim=1)
        if flip:
            probs = torch.stack([probs[0], probs[1].flip(-1)])
        summed = probs.sum(dim=0)
        total = summed if total is None else total + summed
        passes += probs.shape[0]
    return total / passes


def crf_labels(image: np.ndarray, probs: np.ndarray, kernels: CrfKernels = DEEPLAB_KERNELS) -> np.ndarray:
    """Dense-CRF refined labels (H, W) uint8 from probabilities (C, H, W) and the image (H, W, 3) uint8.

    Deviation (spec §7.3): deeplab-pytorch fed the CRF the mean-subtracted image cast to uint8
    (wrapped values); we give the bilateral kernel the clean RGB image. Kernels: spec §7.1.
    """
    return crf_from_probs(image, probs, kernels=kernels).argmax(axis=0).astype(np.uint8)


def reference_crf_image(image: np.ndarray) -> np.ndarray:
    """The image deeplab-pytorch's CRF pass sees (spec §7.3): RGB uint8 (H, W, 3) -> BGR, minus the
    caffe mean (104.008, 116.669, 122.675), cast to uint8. The cast truncates toward zero and wraps
    modulo 256 (what numpy's float->uint8 cast does on x86 for these values; written out here so
    the result does not depend on the platform): 100 - 104.008 = -4.008 -> -4 -> 252."""
    bgr = image[..., ::-1].astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, dtype=np.float32)
    return np.mod(np.trunc(bgr).astype(np.int64), 256).astype(np.uint8)

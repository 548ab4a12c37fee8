"""Fully connected CRFs (Krähenbühl & Koltun) over an RGB image, through pydensecrf.

Two flavours, both pure functions of numpy arrays:

* `crf_from_labels`: the reference's `imutils.crf_inference_label`, used for the confident IR
  labels (spec §6a step 2) and the optional "seed + dense CRF" mask route (spec §6c).
* `crf_from_probs`: the DeepLab post-processing CRF on softmax probabilities (spec §7.1, CRF row).

pydensecrf reads raw buffers: the image must be (H, W, 3) C-contiguous uint8 and the unary
(n_labels, H*W) C-contiguous float32, or it reads the wrong memory. Both functions make those
copies themselves, so callers may pass views, crops or flipped arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pydensecrf.densecrf as dcrf
from pydensecrf.utils import unary_from_labels, unary_from_softmax

# unary_from_softmax clips probabilities here before -log (deeplab-pytorch keeps the default).
SOFTMAX_CLIP = 1e-5


@dataclass(frozen=True)
class CrfKernels:
    """Pairwise kernels and mean-field steps of a dense CRF: Gaussian (sxy, compat), bilateral
    (sxy, srgb, compat) on the RGB image, `iterations` steps."""

    gauss_sxy: float
    gauss_compat: float
    bilateral_sxy: float
    bilateral_srgb: float
    bilateral_compat: float
    iterations: int = 10


IR_LABEL_KERNELS = CrfKernels(gauss_sxy=3, gauss_compat=3, bilateral_sxy=50, bilateral_srgb=5, bilateral_compat=10)
"""The reference's IR-label CRF (spec §6a step 2)."""
DEEPLAB_KERNELS = CrfKernels(gauss_sxy=1, gauss_compat=3, bilateral_sxy=67, bilateral_srgb=3, bilateral_compat=4)
"""deeplab-pytorch's post-processing CRF (spec §7.1)."""


def _rgb_for_crf(image: np.ndarray) -> np.ndarray:
    """The bilateral kernel's colour image: (H, W, 3) C-contiguous uint8 (a copy, as the reference makes)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3), got {image.shape}")
    if image.dtype != np.uint8:
        # The reference feeds the CRF the uint8 RGB image; a float image would be read as bytes.
        raise ValueError(f"image must be uint8 RGB, got {image.dtype}")
    return np.ascontiguousarray(np.copy(image))


def _mean_field(image: np.ndarray, unary: np.ndarray, kernels: CrfKernels) -> np.ndarray:
    """Run `iterations` mean-field steps of a DenseCRF2D and return Q as (L, H, W) float32.

    unary: (L, H*W) energies (-log p). Kernels use pydensecrf's defaults (diagonal kernel,
    symmetric normalisation), as the reference and deeplab-pytorch do.
    """
    height, width = image.shape[:2]
    n_labels = unary.shape[0]
    crf = dcrf.DenseCRF2D(width, height, n_labels)
    crf.setUnaryEnergy(np.ascontiguousarray(unary, dtype=np.float32))
    crf.addPairwiseGaussian(sxy=kernels.gauss_sxy, compat=kernels.gauss_compat)
    crf.addPairwiseBilateral(
        sxy=kernels.bilateral_sxy, srgb=kernels.bilateral_srgb, rgbim=image, compat=kernels.bilateral_compat
    )
    q = crf.inference(kernels.iterations)
    return np.asarray(q, dtype=np.float32).reshape(n_labels, height, width)


def crf_from_labels(
    image: np.ndarray,
    labels: np.ndarray,
    n_labels: int,
    *,
    gt_prob: float = 0.7,
    zero_unsure: bool = False,
    kernels: CrfKernels = IR_LABEL_KERNELS,
) -> np.ndarray:
    """Refine a hard label map with a dense CRF (spec §6a step 2; reference `crf_inference_label`).

    image: (H, W, 3) uint8 RGB, the original (not normalised) image.
    labels: (H, W) integer map. With `zero_unsure=False` (the reference's setting) the values
      are CRF labels 0..n_labels-1 and 0 is an ordinary label (background). With
      `zero_unsure=True` the values are 0..n_labels: 0 means "unsure" (uniform unary) and value
      v >= 1 is CRF label v-1 (pydensecrf's convention).
    n_labels: number of CRF labels L (the reference passes len(K') = K+1).
    Unary: a pixel's own label has probability `gt_prob`, each other (1-gt_prob)/(L-1); energy
    -log p (pydensecrf's `unary_from_labels`). Pairwise `kernels` (default the reference's
    IR-label CRF: Gaussian sxy 3 / compat 3, bilateral sxy 50 / srgb 5 / compat 10, 10 steps).
    Returns (H, W) int64 argmax of Q, a CRF label index in 0..n_labels-1 (with zero_unsure,
    index c stands for input value c+1).
    With n_labels == 1 every pixel is label 0; the CRF is not run, since its unary would
    divide by L-1 = 0 (an image whose CAMs have no class: only background remains).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape != np.shape(image)[:2]:
        raise ValueError(f"labels {labels.shape} must be (H, W) of image {np.shape(image)}")
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    top = n_labels if zero_unsure else n_labels - 1
    if labels.size and (labels.min() < 0 or labels.max() > top):
        # An out-of-range label would silently index another row of the unary (numpy wraps -1).
        raise ValueError(f"labels span [{labels.min()}, {labels.max()}], outside [0, {top}]")
    if n_labels == 1:
        return np.zeros(labels.shape, dtype=np.int64)
    rgb = _rgb_for_crf(image)
    unary = unary_from_labels(labels.astype(np.int64), n_labels, gt_prob=gt_prob, zero_unsure=zero_unsure)
    q = _mean_field(rgb, unary, kernels)
    # First maximum wins, as the reference's np.argmax over the reshaped Q.
    return np.argmax(q, axis=0).astype(np.int64)


def crf_from_probs(
    image: np.ndarray,
    probs: np.ndarray,
    *,
    kernels: CrfKernels = DEEPLAB_KERNELS,
) -> np.ndarray:
    """DeepLab CRF post-processing of class probabilities (spec §7.1, CRF row; deeplab-pytorch `DenseCRF`).

    image: (H, W, 3) uint8 RGB. Spec §7.3: the reference fed the mean-subtracted image cast to
      uint8 (wrapped values); we take the clean image and leave that choice to the caller.
    probs: (L, H, W) float softmax probabilities (of logits upsampled to the image size), L >= 1.
    Unary = -log(clip(probs, 1e-5, 1)); `kernels` default to deeplab-pytorch's: Gaussian
    (sxy 1, compat 3), bilateral (sxy 67, srgb 3, compat 4), 10 mean-field steps.
    Returns (L, H, W) float32 refined probabilities Q, summing to 1 over L at every pixel; the
    segmentation is its argmax over axis 0.
    """
    probs = np.asarray(probs)
    if probs.ndim != 3 or probs.shape[1:] != np.shape(image)[:2]:
        raise ValueError(f"probs {probs.shape} must be (L, H, W) with (H, W) of image {np.shape(image)}")
    if probs.shape[0] == 1:
        # One label: Q is 1 everywhere; pydensecrf would only reproduce that.
        return np.ones(probs.shape, dtype=np.float32)
    rgb = _rgb_for_crf(image)
    unary = unary_from_softmax(probs, clip=SOFTMAX_CLIP)
    return _mean_field(rgb, unary, kernels)

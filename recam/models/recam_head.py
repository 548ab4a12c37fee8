"""ReCAM training head: normalised CAMs, class-specific pooled features, the SCE loss.

Spec §3.1 steps 5-6 and §3.2. The backbone, the BCE classifier and the 1x1 class-map
convolution live in `cam_net.py`; this module starts from their outputs and holds only math.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def normalize_cams(cams: Tensor, eps: float = 1e-5) -> Tensor:
    """Per-image, per-class max normalisation of class activation maps (spec §3.1 step 5).

    cams: (B, K, H, W) float, non-negative (ReLU already applied, for all K classes).
    Returns (B, K, H, W), same dtype: `cams / (max_{h,w} cams + eps)`, so values lie in
    [0, 1) and an all-zero map stays zero.

    Differentiable through the max, as in the reference (nothing is detached; spec §9.3).
    The reference takes the max with `adaptive_max_pool2d`, whose backward sends a tied
    maximum's gradient to one pixel; `amax` splits it evenly among the tied pixels. Ties at a
    positive maximum do not occur with real-valued features, an all-zero map gets zero
    gradient either way (its numerator is 0), and `amax` has a deterministic CUDA backward,
    which adaptive max pooling lacks.
    """
    return cams / (cams.amax(dim=(-2, -1), keepdim=True) + eps)


def class_features(cams: Tensor, feats: Tensor) -> Tensor:
    """CAM-weighted spatial mean of the features, per class (spec §3.1 step 6, §3.5).

    cams: (B, K, H, W) float, normally the output of `normalize_cams`.
    feats: (B, C, H, W) float, the stage-4 features.
    Returns (B, K, C): `F[b, k, c] = mean_{h,w} cams[b, k, h, w] * feats[b, c, h, w]`.

    One batched matrix product, the spec's `F = Â fᵀ / N` with N = H*W. It is the same sum
    as the reference's broadcast product (`class_features_materialized`), in another
    floating-point order, without building its B*K*C*H*W tensor (2.7 GB in fp32 at batch 16,
    K 20, C 2048, 32x32); its backward is the matching pair of batched products.
    """
    if cams.shape[0] != feats.shape[0] or cams.shape[-2:] != feats.shape[-2:]:
        raise ValueError(f"cams {tuple(cams.shape)} and feats {tuple(feats.shape)} differ in batch or spatial size")
    height, width = cams.shape[-2:]
    # Computed as the transpose of (B, C, HW) @ (B, HW, K): then the big gradient, that of
    # feats, comes out of its batched product already in (B, C, HW) layout. The direct
    # (B, K, HW) @ (B, HW, C) form returns it as a transposed view that autograd copies, which
    # made the backward about 5x slower on CPU at the spec size (scripts/bench_class_features.py).
    pooled = torch.bmm(feats.flatten(2), cams.flatten(2).transpose(1, 2)) / (height * width)
    return pooled.transpose(1, 2).contiguous()


def class_features_materialized(cams: Tensor, feats: Tensor) -> Tensor:
    """The reference's broadcast form of `class_features`; a test oracle and benchmark baseline only.

    cams: (B, K, H, W), feats: (B, C, H, W). Returns (B, K, C).
    Builds the full (B, K, C, H, W) product `cams[:, :, None] * feats[:, None]` and averages it
    over space, exactly as the official code does (spec §3.5). Never use it in training: at the
    spec size it needs about 2.7 GB forward and as much again backward. It exists so tests can
    check `class_features` against it and `scripts/bench_class_features.py` can measure both.
    """
    product = cams.unsqueeze(2) * feats.unsqueeze(1)
    return product.flatten(3).mean(dim=-1)


def recam_ce_loss(class_feats: Tensor, predictor_weight: Tensor, labels: Tensor) -> dict[str, Tensor]:
    """Softmax cross entropy of the ReCAM class predictor over each image's positive classes (spec §3.2).

    class_feats: (B, K, C) float, output of `class_features`.
    predictor_weight: (K, C) float (or the (K, C, 1, 1) weight of the bias-free 1x1 conv), `V`.
    labels: (B, K) multi-hot; a class is positive where its label is > 0.

    For every positive pair (b, k) the row `class_feats[b, k]` gets logits `V @ row` (K values)
    and the target k. Per image the row losses are averaged; the per-image means are summed
    and divided by B, so an image without positive classes adds 0 yet counts in B, as in the
    reference. Pairs are gathered in (image, class) ascending order, all rows are scored with
    one matrix product and per-image means are taken with `index_add_`, so no loop over images.

    Returns a dict:
      loss: () scalar, `(1/B) sum_b mean_{k in P_b} CE(b, k)`, differentiable.
      acc: () fraction of rows whose argmax equals their target (NaN when no image has a positive
        class; the reference divides 0 by 0 there). No gradient.
      logits: (M, K) row logits, M = number of positive pairs, in (image, class) order.
      targets: (M,) int64 class of each row.
      image_index: (M,) int64 image of each row.
      ce_per_image: (B,) mean CE of each image (0 for images without positive classes).
    """
    if labels.shape != class_feats.shape[:2]:
        raise ValueError(f"labels {tuple(labels.shape)} do not match class_feats {tuple(class_feats.shape)}")
    batch = labels.shape[0]
    weight = predictor_weight.reshape(predictor_weight.shape[0], -1)
    image_index, targets = torch.nonzero(labels > 0, as_tuple=True)
    rows = class_feats[image_index, targets]
    logits = rows @ weight.t()
    row_ce = F.cross_entropy(logits, targets, reduction="none")

    ce_sum = torch.zeros(batch, dtype=row_ce.dtype, device=row_ce.device).index_add_(0, image_index, row_ce)
    rows_per_image = torch.bincount(image_index, minlength=batch)
    # clamp: an image without rows has ce_sum 0, and 0/1 keeps it at 0 instead of NaN.
    ce_per_image = ce_sum / rows_per_image.clamp(min=1).to(ce_sum.dtype)
    loss = ce_per_image.sum() / batch

    with torch.no_grad():
        correct = (logits.argmax(dim=1) == targets).sum().to(row_ce.dtype)
        acc = correct / targets.numel()
    return {
        "loss": loss,
        "acc": acc,
        "logits": logits,
        "targets": targets,
        "image_index": image_index,
        "ce_per_image": ce_per_image,
    }

"""Gradient-free CAMs that score masked inputs: Score-CAM and SS-CAM.

Each channel c of the target layer's activation A, min-max normalised to [0, 1] and upsampled to
the input size, masks the input; the class scores of the masked inputs weight the channels.
The masked inputs of all (image, channel) pairs run as batched forwards of `chunk_size` inputs
(one forward per channel is `chunk_size=1`); one forward gives the scores of every class, so the
cost does not grow with K. `top_k` keeps only the k channels of largest spatial variance per image
(a flat channel gives a flat mask, which says nothing about where the class is); the others get
weight 0. Call shape and result: see `recam.cams.cam`. Choices against the papers and the
libraries (normalise-then-upsample, softmax over channels of the logits): docs/cams.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recam.cams.cam import normalize_minmax, resize_maps, weighted_sum
from recam.cams.hooks import OutputFn, as_class_ids, capture, eval_mode, logits_of, resolve_layer

ClassIds = Tensor | Sequence[int] | Sequence[Sequence[int]]
WEIGHTINGS = ("softmax", "probability")
MASK_EPS = 1e-8  # min-max normalisation of the masks; torchcam's value


def top_channels(activations: Tensor, top_k: int | None) -> Tensor:
    """(B, C') int64 channel indices per image: all C channels (top_k None or >= C), else the top_k
    of largest spatial variance, in decreasing order. activations: (B, C, h, w)."""
    batch, channels = activations.shape[:2]
    if top_k is None or top_k >= channels:
        return torch.arange(channels, device=activations.device).expand(batch, -1)
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    return activations.flatten(2).var(dim=-1).topk(top_k, dim=1).indices


def channel_masks(activations: Tensor) -> Tensor:
    """Per-channel min-max normalised activations in [0, 1], at the layer's resolution: (B, C, h, w)."""
    return normalize_minmax(activations.float(), eps=MASK_EPS)


@torch.no_grad()
def masked_scores(
    model: nn.Module,
    images: Tensor,
    masks: Tensor,
    channels: Tensor,
    *,
    output: OutputFn = logits_of,
    chunk_size: int = 32,
    generator: torch.Generator | None = None,
    noise_std: float = 0.0,
) -> Tensor:
    """Class scores of the masked inputs X_b * U(M_bc) for every image b and channel c in channels[b].

    images (B, 3, H, W); masks (B, C, h, w) in [0, 1]; channels (B, C') indices. U = bilinear
    upsampling to (H, W) (align_corners=False), done per chunk so that no (B, C, H, W) tensor is
    held. With noise_std > 0, N(0, noise_std^2) noise drawn from `generator`, one (n, 1, H, W)
    draw per chunk, is added to the upsampled masks (SS-CAM). `chunk_size` masked inputs per
    forward. Returns (B, C', num_classes) float32, the model's output for each masked input.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    batch, kept = channels.shape
    image_index = torch.arange(batch, device=images.device).repeat_interleave(kept)
    channel_index = channels.reshape(-1)
    size = images.shape[-2:]
    scores = []
    for start in range(0, image_index.numel(), chunk_size):
        b = image_index[start : start + chunk_size]
        upsampled = resize_maps(masks[b, channel_index[start : start + chunk_size]].unsqueeze(1), size)
        if noise_std > 0:
            upsampled = upsampled + noise_std * torch.randn(
                upsampled.shape, generator=generator, device=upsampled.device, dtype=upsampled.dtype
            )
        scores.append(output(model(images[b] * upsampled.to(images.dtype))).float())
    return torch.cat(scores).reshape(batch, kept, -1)


def _score_weights(scores: Tensor, ids: Tensor, weighting: str) -> Tensor:
    """(B, C', num_classes) masked-input outputs -> (B, K, C') channel weights."""
    if weighting == "softmax":
        selected = scores.gather(2, ids.unsqueeze(1).expand(-1, scores.shape[1], -1))  # (B, C', K)
        return selected.transpose(1, 2).softmax(dim=-1)
    if weighting == "probability":
        probabilities = scores.softmax(dim=-1)
        return probabilities.gather(2, ids.unsqueeze(1).expand(-1, scores.shape[1], -1)).transpose(1, 2)
    raise ValueError(f"unknown Score-CAM weighting {weighting!r}; choose one of {', '.join(WEIGHTINGS)}")


def scatter_channel_weights(weights: Tensor, channels: Tensor, num_channels: int) -> Tensor:
    """(B, K, C') weights of the kept channels -> (B, K, C) with 0 for the others."""
    full = weights.new_zeros((*weights.shape[:2], num_channels))
    return full.scatter(2, channels.unsqueeze(1).expand(-1, weights.shape[1], -1), weights)


@torch.no_grad()
def score_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
    chunk_size: int = 32,
    top_k: int | None = None,
    weighting: str = "softmax",
) -> Tensor:
    """Score-CAM (Wang et al., CVPRW 2020): ReLU(sum_c w_kc A_c) with w_kc from the scores of X * U(M_c).

    weighting="softmax" (default, both libraries): w_k = softmax over channels of the logits
      Y_k(X * U(M_c)); subtracting a baseline score (the paper's Y_k(X_b), torchcam's Y_k(X)) does
      not change a softmax over channels.
    weighting="probability" (the paper's reference code): w_kc = softmax over classes of the masked
      output, at class k; for a single-label (softmax) classifier.
    """
    layer = resolve_layer(model, target_layer)
    with eval_mode(model), capture(layer) as captured:
        model(images)
    activations = captured.get().float()
    ids = as_class_ids(class_ids, images.shape[0], activations.device)
    channels = top_channels(activations, top_k)
    with eval_mode(model):
        scores = masked_scores(
            model, images, channel_masks(activations), channels, output=output, chunk_size=chunk_size
        )
    weights = scatter_channel_weights(_score_weights(scores, ids, weighting), channels, activations.shape[1])
    return weighted_sum(weights, activations)


@torch.no_grad()
def ss_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
    chunk_size: int = 32,
    top_k: int | None = None,
    n_samples: int = 8,
    noise_std: float = 2.0,
    seed: int = 0,
) -> Tensor:
    """SS-CAM (Wang et al. 2020, "smoothed Score-CAM"): Score-CAM whose channel scores are averaged
    over `n_samples` noisy masks U(M_c) + N(0, noise_std^2) (noise on the normalised, upsampled
    mask, as torchcam; default sigma 2 is torchcam's), drawn from a generator seeded with `seed`:
    w_k = softmax over channels of mean_s Y_k(X * (U(M_c) + noise_s)).
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    layer = resolve_layer(model, target_layer)
    with eval_mode(model), capture(layer) as captured:
        model(images)
    activations = captured.get().float()
    ids = as_class_ids(class_ids, images.shape[0], activations.device)
    channels = top_channels(activations, top_k)
    masks = channel_masks(activations)
    generator = torch.Generator(device=images.device).manual_seed(seed)
    total = None
    with eval_mode(model):
        for _ in range(n_samples):
            scores = masked_scores(
                model,
                images,
                masks,
                channels,
                output=output,
                chunk_size=chunk_size,
                generator=generator,
                noise_std=noise_std,
            )
            total = scores if total is None else total + scores
    weights = scatter_channel_weights(_score_weights(total / n_samples, ids, "softmax"), channels, activations.shape[1])
    return weighted_sum(weights, activations)

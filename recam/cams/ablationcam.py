"""Ablation-CAM (Desai & Ramaswamy, WACV 2020): weight each channel by the drop of the class
score when that channel of the target layer is set to zero.

Batched without re-running the whole network per channel: the image runs once up to the target
layer, where a hook replaces its (1, C, h, w) output by n ablated copies (n, C, h, w), so only the
layers after it run n times (`chunk_size` copies per forward). This needs the model after the target
layer to accept a larger batch than the input's, which holds for feed-forward CNNs (torchvision's
classifiers, our CamNet) but not for a model that concatenates an earlier tensor with a later one.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recam.cams.cam import weighted_sum
from recam.cams.hooks import OutputFn, as_class_ids, capture, eval_mode, logits_of, replace_output, resolve_layer
from recam.cams.scorecam import scatter_channel_weights, top_channels

ClassIds = Tensor | Sequence[int] | Sequence[Sequence[int]]
SCORE_EPS = 1e-8  # guards the division by a zero class score


def _ablated_copies(channels: Tensor):
    """Hook body: (1, C, h, w) -> (n, C, h, w), copy i with channel channels[i] set to 0."""

    def make(output: Tensor) -> Tensor:
        copies = output.expand(channels.numel(), *output.shape[1:]).clone()
        copies[torch.arange(channels.numel(), device=output.device), channels] = 0
        return copies

    return make


@torch.no_grad()
def ablation_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
    chunk_size: int = 32,
    top_k: int | None = None,
) -> Tensor:
    """Ablation-CAM: w_kc = (Y_k - Y_k^(c)) / |Y_k|, ReLU(sum_c w_kc A_c) (paper eq. 4 with |Y_k|).

    Y_k^(c) is the class score with channel c zeroed. The paper divides by Y_k; we divide by |Y_k|
    so that a negative score does not flip the sign of the map (same result when Y_k > 0, where
    pytorch-grad-cam agrees). top_k: only the k channels of largest variance are ablated, the others
    get weight 0 (an ablation that changes nothing).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    layer = resolve_layer(model, target_layer)
    with eval_mode(model):
        with capture(layer) as captured:
            scores = output(model(images)).float()
        activations = captured.get().float()
        ids = as_class_ids(class_ids, images.shape[0], activations.device)
        base = scores.gather(1, ids)  # (B, K)
        channels = top_channels(activations, top_k)  # (B, C')
        drops = activations.new_zeros((images.shape[0], ids.shape[1], channels.shape[1]))
        for b in range(images.shape[0]):
            for start in range(0, channels.shape[1], chunk_size):
                chunk = channels[b, start : start + chunk_size]
                with replace_output(layer, _ablated_copies(chunk)):
                    ablated = output(model(images[b : b + 1])).float()  # (n, num_classes)
                drops[b, :, start : start + chunk.numel()] = (base[b].unsqueeze(0) - ablated[:, ids[b]]).T
    weights = drops / base.abs().clamp(min=SCORE_EPS).unsqueeze(-1)
    return weighted_sum(scatter_channel_weights(weights, channels, activations.shape[1]), activations)

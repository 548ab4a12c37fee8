"""CAM (Zhou et al., CVPR 2016): the classifier's weights applied at every position of the last
feature map. Also the shared tensor helpers of the CAM family: weighted channel sums and map
normalisation / resizing, so every method returns and post-processes maps the same way.

Every method of the family has the call shape

    method(model, target_layer, images, class_ids, *, output=logits_of, **options) -> (B, K, h, w)

images (B, 3, H, W) as the model takes them; class_ids (K,) shared or (B, K) per image; the
result is float32 and >= 0 (ReLU applied), at the target layer's resolution (h, w) and not
normalised. `normalize_max`, `normalize_minmax` and `resize_maps` post-process it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recam.cams.hooks import OutputFn, as_class_ids, capture, eval_mode, logits_of, resolve_layer


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    """ReLU(sum_c w[b, k, c] A[b, c]): weights (B, K, C), activations (B, C, h, w) -> (B, K, h, w)."""
    return F.relu(torch.einsum("bkc,bchw->bkhw", weights, activations))


def normalize_max(maps: Tensor, eps: float = 1e-5) -> Tensor:
    """maps / (per-map spatial max + eps), the seeds' normalisation (spec §4.3): (..., h, w), >= 0."""
    return maps / (maps.amax(dim=(-2, -1), keepdim=True) + eps)


def normalize_minmax(maps: Tensor, eps: float = 1e-7) -> Tensor:
    """(maps - min) / (max - min + eps) per map over its last two axes: the libraries' normalisation."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    return (maps - low) / (maps.amax(dim=(-2, -1), keepdim=True) - low + eps)


def resize_maps(maps: Tensor, size: Sequence[int]) -> Tensor:
    """Bilinear resize (align_corners=False, as the seed fusion) of (B, K, h, w) maps to size (H, W)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps, size=tuple(size), mode="bilinear", align_corners=False)


def classifier_weight(model: nn.Module) -> Tensor:
    """The (num_classes, C) weight of the model's last linear classifier (its bias is not part of a
    CAM): `model.classifier` when it is a 1x1 conv or linear layer (our CamNet), else the last
    `nn.Linear` of the model (torchvision's `fc`, `classifier[-1]`, ...)."""
    head = getattr(model, "classifier", None)
    if isinstance(head, nn.Conv2d) and head.kernel_size == (1, 1):
        return head.weight.flatten(1)
    if not isinstance(head, nn.Linear):
        linears = [module for module in model.modules() if isinstance(module, nn.Linear)]
        if not linears:
            raise ValueError(
                "CAM needs a linear classifier after global pooling; the model has none "
                "(pass weight=<(num_classes, C) tensor>)"
            )
        head = linears[-1]
    return head.weight


@torch.no_grad()
def cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    *,
    output: OutputFn = logits_of,
    weight: Tensor | None = None,
) -> Tensor:
    """CAM_k = ReLU(sum_c W[k, c] A_c) (Zhou et al. 2016, eq. 2 plus the ReLU of the ReCAM reference).

    target_layer: the feature map that global average pooling feeds to the classifier.
    weight: (num_classes, C); None = `classifier_weight(model)`. The classifier's bias is
    left out (it is the same at every position). Returns (B, K, h, w), >= 0, not normalised; on
    our CamNet it equals `relu(CamNet.class_maps(features))[:, class_ids]`.
    """
    layer = resolve_layer(model, target_layer)
    with eval_mode(model), capture(layer) as captured:
        output(model(images))
    activations = captured.get().float()
    w = (classifier_weight(model) if weight is None else weight).detach().flatten(1).float()
    if w.shape[1] != activations.shape[1]:
        raise ValueError(f"classifier weight has {w.shape[1]} inputs, the target layer {activations.shape[1]} channels")
    ids = as_class_ids(class_ids, images.shape[0], activations.device)
    return weighted_sum(w[ids], activations)

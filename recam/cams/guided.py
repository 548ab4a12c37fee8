"""Input-gradient pictures: guided backpropagation, deconvnet and guided Grad-CAM.

Guided backpropagation (Springenberg et al. 2015) and the deconvnet (Zeiler & Fergus 2014) are
the gradient of a class score with respect to the input image with the ReLU backward rule changed
(`hooks.relu_backward_rule`); guided Grad-CAM (Selvaraju et al. 2017, §3.1) multiplies the guided
gradient by the upsampled Grad-CAM. All return (B, K, 3, H, W) float32 signed gradients; see
`recam.viz.overlays.gradient_image` to show them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recam.cams.cam import normalize_max, resize_maps
from recam.cams.gradcam import grad_cam
from recam.cams.hooks import OutputFn, as_class_ids, eval_mode, logits_of, relu_backward_rule

ClassIds = Tensor | Sequence[int] | Sequence[Sequence[int]]


def input_gradients(
    model: nn.Module, images: Tensor, class_ids: ClassIds, *, output: OutputFn = logits_of, rule: str = "guided"
) -> Tensor:
    """d Y_k / d image under the ReLU backward `rule` ("guided" | "deconvnet"): (B, K, 3, H, W)."""
    with eval_mode(model), torch.enable_grad(), relu_backward_rule(model, rule):
        x = images.detach().clone().requires_grad_(True)
        scores = output(model(x))
        ids = as_class_ids(class_ids, images.shape[0], scores.device)
        selected = scores.gather(1, ids)
        grads = [
            torch.autograd.grad(selected[:, k].sum(), x, retain_graph=k + 1 < ids.shape[1])[0]
            for k in range(ids.shape[1])
        ]
    if not grads:
        return images.new_zeros((images.shape[0], 0, *images.shape[1:])).float()
    return torch.stack(grads, dim=1).float()


def guided_backprop(model: nn.Module, images: Tensor, class_ids: ClassIds, *, output: OutputFn = logits_of) -> Tensor:
    """Guided backpropagation: only positive gradients pass a ReLU, and only where its input was > 0."""
    return input_gradients(model, images, class_ids, output=output, rule="guided")


def deconvnet(model: nn.Module, images: Tensor, class_ids: ClassIds, *, output: OutputFn = logits_of) -> Tensor:
    """Deconvnet: a ReLU passes the positive part of the gradient, whatever its forward input."""
    return input_gradients(model, images, class_ids, output=output, rule="deconvnet")


def guided_grad_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> Tensor:
    """Guided Grad-CAM: guided backprop times Grad-CAM (max-normalised, resized to the image)."""
    heat = resize_maps(
        normalize_max(grad_cam(model, target_layer, images, class_ids, output=output)), images.shape[-2:]
    )
    return guided_backprop(model, images, class_ids, output=output) * heat.unsqueeze(2)

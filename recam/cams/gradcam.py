"""Gradient-weighted CAMs: Grad-CAM, Grad-CAM++, Smooth Grad-CAM++, XGrad-CAM and LayerCAM.

All take the gradients g = dY_k / dA of the pre-softmax class scores Y_k with respect to the
target layer's activation A, one `autograd.grad` per class from one forward. The backward stops
at A (`capture(with_grad=True)` makes A a leaf), so it only runs through the layers after the
target layer, and no parameter's `.grad` is touched. Call shape and result: see `recam.cams.cam`.
Formulas and where the libraries differ: docs/cams.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from recam.cams.cam import weighted_sum
from recam.cams.hooks import OutputFn, as_class_ids, capture, eval_mode, logits_of, resolve_layer

ClassIds = Tensor | Sequence[int] | Sequence[Sequence[int]]


def activation_gradients(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> tuple[Tensor, Tensor, Tensor]:
    """One forward, one backward per class: (A (B, C, h, w), g (B, K, C, h, w), Y (B, K)), detached.

    Images are independent in eval mode, so the gradient of the batch sum of Y_k is each image's own.
    """
    layer = resolve_layer(model, target_layer)
    with eval_mode(model), torch.enable_grad(), capture(layer, with_grad=True) as captured:
        scores = output(model(images))
        activations = captured.get()
        ids = as_class_ids(class_ids, images.shape[0], scores.device)
        selected = scores.gather(1, ids)
        grads = []
        for k in range(ids.shape[1]):
            try:
                (grad,) = torch.autograd.grad(selected[:, k].sum(), activations, retain_graph=k + 1 < ids.shape[1])
            except RuntimeError as err:
                raise RuntimeError(
                    f"the class scores do not depend on the target layer {type(layer).__name__}: "
                    "choose a layer on the path to the output"
                ) from err
            grads.append(grad)
    a = activations.detach().float()
    g = torch.stack(grads, dim=1).float() if grads else a.new_zeros((a.shape[0], 0, *a.shape[1:]))
    return a, g, selected.detach().float()


def grad_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> Tensor:
    """Grad-CAM (Selvaraju et al. 2017, eq. 1-2): w_kc = mean_ij g_kc(i, j); ReLU(sum_c w_kc A_c)."""
    a, g, _ = activation_gradients(model, target_layer, images, class_ids, output=output)
    return weighted_sum(g.mean(dim=(-2, -1)), a)


def _plusplus_weights(a: Tensor, g1: Tensor, g2: Tensor, g3: Tensor) -> Tensor:
    """Grad-CAM++ weights (Chattopadhay et al. 2018, eq. 19 with the exponential score S = exp(Y)):

    alpha = g2 / (2 g2 + sum_ab A(a, b) * g3), 0 where g2 = 0 or the denominator is 0;
    w_kc = sum_ij alpha * ReLU(g1). The exp(Y_k) factors of the derivatives of S cancel in alpha
    and leave a positive per-class factor in w, which the map normalisation removes, so the raw
    gradients of Y are used, as both libraries do. a (B, C, h, w); g* (B, K, C, h, w). -> (B, K, C).
    """
    denominator = 2 * g2 + a.sum(dim=(-2, -1), keepdim=True).unsqueeze(1) * g3
    usable = (g2 != 0) & (denominator != 0)
    alpha = torch.where(
        usable, g2 / torch.where(usable, denominator, torch.ones_like(denominator)), torch.zeros_like(g2)
    )
    return (alpha * g1.clamp(min=0)).sum(dim=(-2, -1))


def grad_cam_plusplus(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> Tensor:
    """Grad-CAM++: ReLU(sum_c w_kc A_c) with the weights of `_plusplus_weights` (eq. 19)."""
    a, g, _ = activation_gradients(model, target_layer, images, class_ids, output=output)
    return weighted_sum(_plusplus_weights(a, g, g * g, g * g * g), a)


def smooth_grad_cam_plusplus(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
    n_samples: int = 4,
    noise_std: float = 0.3,
    seed: int = 0,
) -> Tensor:
    """Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with the derivatives averaged over
    `n_samples` copies of the input plus N(0, noise_std^2) noise (in the model's input units, e.g.
    normalised pixels), drawn from a generator seeded with `seed`, in image order.

    D_p = mean over samples of g^p (p = 1, 2, 3); alpha and w as in Grad-CAM++ with g1, g2, g3 =
    D_1, D_2, D_3; the activations A (in alpha's sum and in the map) are those of the clean image.
    """
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    layer = resolve_layer(model, target_layer)
    with torch.no_grad(), eval_mode(model), capture(layer) as captured:
        model(images)
    a = captured.get().float()
    generator = torch.Generator(device=images.device).manual_seed(seed)
    sums = None
    for _ in range(n_samples):
        noise = torch.randn(images.shape, generator=generator, device=images.device, dtype=images.dtype)
        _, g, _ = activation_gradients(model, layer, images + noise_std * noise, class_ids, output=output)
        powers = (g, g * g, g * g * g)
        sums = powers if sums is None else tuple(s + p for s, p in zip(sums, powers))
    g1, g2, g3 = (s / n_samples for s in sums)
    return weighted_sum(_plusplus_weights(a, g1, g2, g3), a)


def xgrad_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> Tensor:
    """XGrad-CAM (Fu et al. 2020, eq. 13): w_kc = sum_ij g_kc(i, j) A_c(i, j) / sum_ij A_c(i, j)
    (0 for a channel whose sum is 0); ReLU(sum_c w_kc A_c)."""
    a, g, _ = activation_gradients(model, target_layer, images, class_ids, output=output)
    total = a.sum(dim=(-2, -1)).unsqueeze(1)
    safe = torch.where(total != 0, total, torch.ones_like(total))
    weights = torch.where(total != 0, (g * a.unsqueeze(1)).sum(dim=(-2, -1)) / safe, torch.zeros_like(total))
    return weighted_sum(weights, a)


def layer_cam(
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: ClassIds,
    *,
    output: OutputFn = logits_of,
) -> Tensor:
    """LayerCAM (Jiang et al. 2021, eq. 5-6): ReLU(sum_c ReLU(g_kc(i, j)) A_c(i, j)), a weight per position."""
    a, g, _ = activation_gradients(model, target_layer, images, class_ids, output=output)
    return (g.clamp(min=0) * a.unsqueeze(1)).sum(dim=2).clamp(min=0)

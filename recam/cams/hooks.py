"""Hooks and small adapters shared by the CAM methods; every hook lives inside a context manager.

A CAM method needs three things from a model it does not own: the activation of a target layer
(with or without a gradient path from the class score to it), a way to replace that activation
(Ablation-CAM), and, for guided backpropagation, different ReLU gradients. Each is a context
manager whose `finally` removes the hook and restores any attribute it changed, so a model is left
as it was after a normal return and after an exception alike.

`logits_of` adapts the model's output: a tensor-returning torchvision classifier and our `CamNet`
(which returns `{"logits", "features"}`) both work with the default.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

OutputFn = Callable[[Any], Tensor]


def logits_of(output: Any) -> Tensor:
    """The (B, K) class scores of a model's output: the output itself when it is a tensor, its
    "logits" entry when it is a mapping (our `CamNet`), else TypeError."""
    if isinstance(output, Tensor):
        return output
    if isinstance(output, Mapping) and "logits" in output:
        return output["logits"]
    raise TypeError(
        f"cannot find class scores in a model output of type {type(output).__name__}; "
        "pass output=<function returning the (B, K) scores>"
    )


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> nn.Module:
    """The target layer: a module of `model`, or its dotted name (`"layer4"`, `"backbone.layer4"`)."""
    if isinstance(layer, nn.Module):
        if not any(module is layer for module in model.modules()):
            raise ValueError(f"target layer {type(layer).__name__} is not a module of the model")
        return layer
    try:
        return model.get_submodule(layer)
    except AttributeError as err:
        names = [name for name, _ in model.named_children()]
        raise ValueError(f"model has no layer {layer!r} (top-level modules: {', '.join(names)})") from err


def as_class_ids(
    class_ids: Tensor | Sequence[int] | Sequence[Sequence[int]], batch_size: int, device: torch.device
) -> Tensor:
    """Class indices as a (B, K) int64 tensor: a (K,) list is shared by every image, a (B, K) one
    gives each image its own K classes (K may be 0)."""
    ids = torch.as_tensor(class_ids, dtype=torch.int64, device=device)
    if ids.ndim == 1:
        ids = ids.unsqueeze(0).expand(batch_size, -1)
    if ids.ndim != 2 or ids.shape[0] != batch_size:
        raise ValueError(f"class_ids must be (K,) or (B={batch_size}, K), got {tuple(ids.shape)}")
    return ids


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put every module in eval mode (BatchNorm running statistics, no dropout), then restore each
    module's own flag, as it was (a `Backbone` keeps its frozen stem in eval mode while training)."""
    modes = [(module, module.training) for module in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for module, training in modes:
            module.training = training


@dataclass
class Captured:
    """What `capture` stored: the target layer's output of the last forward (None before one)."""

    activation: Tensor | None = None

    def get(self) -> Tensor:
        if self.activation is None:
            raise RuntimeError("the target layer did not run in the forward pass")
        return self.activation


@contextmanager
def capture(layer: nn.Module, *, with_grad: bool = False) -> Iterator[Captured]:
    """Record `layer`'s output during forwards run inside the block; the hook is removed on exit.

    with_grad=False: a detached copy (a later in-place op of the model cannot change it).
    with_grad=True: the output is replaced by a leaf tensor that requires grad (the stored
    `activation`), so `torch.autograd.grad(score, activation)` gives d score / d activation even for
    a model whose parameters are frozen; the backward stops there instead of running through the
    layers before it. The model continues on a clone, so in-place ops after the layer are safe.
    """
    captured = Captured()

    def hook(module: nn.Module, inputs: tuple, output: Any) -> Tensor | None:
        if not isinstance(output, Tensor):
            raise TypeError(f"target layer {type(module).__name__} returned {type(output).__name__}, not a tensor")
        if not with_grad:
            captured.activation = output.detach().clone()
            return None
        leaf = output.detach().requires_grad_(True)
        captured.activation = leaf
        return leaf.clone()

    handle = layer.register_forward_hook(hook)
    try:
        yield captured
    finally:
        handle.remove()


@contextmanager
def replace_output(layer: nn.Module, make_output: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Inside the block, `layer`'s output x becomes `make_output(x)` (which may have a larger batch:
    Ablation-CAM runs one image to the layer and many ablated copies after it)."""
    handle = layer.register_forward_hook(lambda module, inputs, output: make_output(output))
    try:
        yield
    finally:
        handle.remove()


class _GuidedReLU(torch.autograd.Function):
    """ReLU whose backward passes only positive gradients at positive inputs (guided backprop)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad.clamp(min=0) * (x > 0).to(grad.dtype)


class _DeconvReLU(torch.autograd.Function):
    """ReLU whose backward is the ReLU of the gradient, whatever the input (Zeiler & Fergus deconvnet)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return grad.clamp(min=0)


RELU_RULES: dict[str, type[torch.autograd.Function]] = {"guided": _GuidedReLU, "deconvnet": _DeconvReLU}


@contextmanager
def relu_backward_rule(model: nn.Module, rule: str) -> Iterator[None]:
    """Inside the block every `nn.ReLU` module of `model` back-propagates by `rule` ("guided" or
    "deconvnet"); forward values are unchanged. ReLUs called as functions (F.relu) are not
    affected: torchvision's CNNs and our models use modules. In-place ReLUs are made out-of-place
    for the duration (the rule needs the ReLU's input), and set back on exit."""
    if rule not in RELU_RULES:
        raise ValueError(f"unknown ReLU rule {rule!r}; choose one of {', '.join(RELU_RULES)}")
    function = RELU_RULES[rule]
    relus = [module for module in model.modules() if isinstance(module, nn.ReLU)]
    inplace = [relu.inplace for relu in relus]
    handles = []
    try:
        for relu in relus:
            relu.inplace = False
            handles.append(relu.register_forward_hook(lambda module, inputs, output: function.apply(inputs[0])))
        yield
    finally:
        for handle in handles:
            handle.remove()
        for relu, flag in zip(relus, inplace):
            relu.inplace = flag


def hook_count(model: nn.Module) -> int:
    """Forward, forward-pre and backward hooks registered on `model`'s modules (tests: 0 after use)."""
    return sum(
        len(m._forward_hooks)
        + len(m._forward_pre_hooks)
        + len(m._backward_hooks)
        + len(getattr(m, "_backward_pre_hooks", {}))
        for m in model.modules()
    )

"""ResNet backbone on torchvision's ResNet: fixed BatchNorm, output stride, freezing, weights.

Spec §2.1-2.2. The network is torchvision's own `ResNet` (no forked file); we only

* build it with `FixedBatchNorm2d` as its norm layer (BN that always uses its running stats),
* edit the strides (and, for output stride 8, the 3x3 dilations) of its first blocks,
* drop `fc` (its weights and its state_dict keys),
* wrap its modules in `Backbone`, which adds the stage split and the freezing rules.

`Backbone`'s state_dict keys are exactly torchvision's minus `fc.*` (`conv1.weight`,
`bn1.running_mean`, `layer1.0.conv1.weight`, ..., `num_batches_tracked` included), so
torchvision ImageNet files and the golden parameter names load with `strict=True`.
"""

from __future__ import annotations

import logging
import pickle
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from urllib.parse import urlparse

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import (
    ResNet,
    ResNet18_Weights,
    ResNet34_Weights,
    ResNet50_Weights,
    ResNet101_Weights,
    ResNet152_Weights,
    resnet18,
    resnet34,
    resnet50,
    resnet101,
    resnet152,
)
from torchvision.models.resnet import BasicBlock, Bottleneck

from recam.errors import RecamInputError

log = logging.getLogger(__name__)

RESNET_BUILDERS: dict[str, Callable[..., ResNet]] = {
    "resnet18": resnet18,
    "resnet34": resnet34,
    "resnet50": resnet50,
    "resnet101": resnet101,
    "resnet152": resnet152,
}

# The original torchvision ImageNet weights ("V1"), which the reference loads.
IMAGENET_WEIGHTS = {
    "resnet18": ResNet18_Weights.IMAGENET1K_V1,
    "resnet34": ResNet34_Weights.IMAGENET1K_V1,
    "resnet50": ResNet50_Weights.IMAGENET1K_V1,
    "resnet101": ResNet101_Weights.IMAGENET1K_V1,
    "resnet152": ResNet152_Weights.IMAGENET1K_V1,
}

# The spec names the file the reference downloaded through torchvision's old URL table,
# `resnet50-19c8e357.pth`; torchvision now serves its V1 weights as `resnet50-0676ba61.pth`.
# If the reference's file is already in the hub cache we use it, as it is the spec's exact file.
LEGACY_IMAGENET_FILES = {"resnet50": "resnet50-19c8e357.pth"}

OUTPUT_STRIDES = (8, 16)

# Modules whose parameters get no gradient, per `freeze_upto` (spec §2.2): ReCAM freezes
# conv1 + bn1; the IRN repo also cuts the gradient after layer2.
FROZEN_MODULES: dict[str, tuple[str, ...]] = {
    "none": (),
    "conv1": ("conv1", "bn1"),
    "layer2": ("conv1", "bn1", "layer1", "layer2"),
}


class FixedBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that always normalises with its running statistics, in train mode too.

    The reference's "FixedBatchNorm" (spec §2.2): `y = (x - running_mean) / sqrt(running_var + eps)
    * weight + bias`, eps 1e-5 by default. Running statistics and `num_batches_tracked` never
    change; `weight` (gamma) and `bias` (beta) stay ordinary trainable parameters. Being a
    BatchNorm2d subclass it keeps BatchNorm2d's state_dict keys, `num_batches_tracked` included.

    x: (B, C, H, W) -> (B, C, H, W), same dtype.
    """

    def forward(self, x: Tensor) -> Tensor:
        # training=False is what makes it "fixed": batch statistics are neither used nor tracked.
        return F.batch_norm(
            x,
            self.running_mean,
            self.running_var,
            self.weight,
            self.bias,
            training=False,
            momentum=0.0,
            eps=self.eps,
        )


def freeze_bn_stats(module: nn.Module) -> nn.Module:
    """Swap every `nn.BatchNorm2d` inside `module` for a `FixedBatchNorm2d`, in place.

    The new layers share the old ones' parameters and buffers (same tensors, same
    requires_grad, same train/eval flag), so state_dict keys and any optimizer built before
    stay valid. Returns `module` (or the replacement, when `module` itself is a BatchNorm2d).
    For modules built by hand; `build_resnet` passes `FixedBatchNorm2d` as torchvision's
    `norm_layer` instead.
    """
    if isinstance(module, nn.BatchNorm2d) and not isinstance(module, FixedBatchNorm2d):
        return _as_fixed(module)
    for name, child in module.named_children():
        replacement = freeze_bn_stats(child)
        if replacement is not child:
            setattr(module, name, replacement)
    return module


def _as_fixed(bn: nn.BatchNorm2d) -> FixedBatchNorm2d:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"cannot fix {bn}: it has no running statistics (track_running_stats=False)")
    fixed = FixedBatchNorm2d(
        bn.num_features,
        eps=bn.eps,
        momentum=bn.momentum,
        affine=bn.affine,
        device=bn.running_mean.device,
        dtype=bn.running_mean.dtype,
    )
    if bn.affine:
        fixed.weight = bn.weight
        fixed.bias = bn.bias
    fixed.running_mean = bn.running_mean
    fixed.running_var = bn.running_var
    fixed.num_batches_tracked = bn.num_batches_tracked
    fixed.train(bn.training)
    return fixed


def set_output_stride(resnet: ResNet, output_stride: int) -> None:
    """Give a torchvision ResNet output stride 16 or 8, the reference's way (spec §2.1), in place.

    * 16: layer4's first block gets stride 1 (its strided 3x3 conv and its shortcut conv),
      with no dilation anywhere. torchvision's `replace_stride_with_dilation=[False, False, True]`
      would also dilate layer4's later blocks by 2, which is a different network; the golden
      `resnet50_cam_forward` test tells the two apart.
    * 8: layer3 and layer4 both get stride 1; the blocks of both layers after the first use
      dilation 2 (padding 2) on their 3x3 convs, while each layer's first block keeps
      dilation 1, and layer4 uses 2, not 4 (the reference's quirk; torchvision would use 1/2 in
      layer3 and 2/4 in layer4).
    """
    if output_stride not in OUTPUT_STRIDES:
        raise RecamInputError(
            f"recam: model.output_stride={output_stride} is not supported - use one of {list(OUTPUT_STRIDES)}"
        )
    layers = [resnet.layer4] if output_stride == 16 else [resnet.layer3, resnet.layer4]
    for layer in layers:
        _remove_stride(layer)
        if output_stride == 8:
            _dilate_after_first_block(layer, dilation=2)


def _strided_conv(block: nn.Module) -> nn.Conv2d:
    # torchvision's Bottleneck puts the stride on its 3x3 conv2 ("v1.5", as the reference);
    # BasicBlock has it on conv1.
    return block.conv2 if isinstance(block, Bottleneck) else block.conv1


def _three_by_three_convs(block: nn.Module) -> list[nn.Conv2d]:
    if isinstance(block, Bottleneck):
        return [block.conv2]
    if isinstance(block, BasicBlock):
        return [block.conv1, block.conv2]
    raise TypeError(f"unknown ResNet block type {type(block).__name__}")


def _remove_stride(layer: nn.Sequential) -> None:
    first = layer[0]
    _strided_conv(first).stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1


def _dilate_after_first_block(layer: nn.Sequential, *, dilation: int) -> None:
    for block in list(layer)[1:]:
        for conv in _three_by_three_convs(block):
            # padding = dilation keeps the spatial size of a 3x3 conv with stride 1.
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


def build_resnet(
    *,
    arch: str = "resnet50",
    output_stride: int = 16,
    fixed_bn: bool = True,
    pretrained: str = "none",
) -> ResNet:
    """A torchvision ResNet with the reference's changes: fixed BN, output stride, no `fc`.

    arch: resnet18/34/50/101/152. output_stride: 16 (reference) or 8, see `set_output_stride`.
    fixed_bn: `FixedBatchNorm2d` everywhere (reference) or plain trainable `nn.BatchNorm2d`.
    pretrained: "none", "imagenet" (torchvision's IMAGENET1K_V1 file from the torch hub cache,
    downloaded there if absent) or a path to a state_dict, see `load_pretrained`.

    `fc` is replaced by `nn.Identity` so that it has no weights or keys; the returned module's
    `forward` therefore gives the global-average-pooled features (B, C). Use `Backbone` for the
    stage outputs.
    """
    if arch not in RESNET_BUILDERS:
        raise RecamInputError(f"recam: model.arch={arch} is not supported - use one of {sorted(RESNET_BUILDERS)}")
    norm_layer = FixedBatchNorm2d if fixed_bn else nn.BatchNorm2d
    resnet = RESNET_BUILDERS[arch](weights=None, norm_layer=norm_layer)
    resnet.fc = nn.Identity()
    set_output_stride(resnet, output_stride)
    load_pretrained(resnet, pretrained, arch=arch)
    return resnet


def load_pretrained(module: nn.Module, pretrained: str, *, arch: str) -> None:
    """Load backbone weights into `module` (torchvision ResNet keys minus `fc.*`), strictly.

    pretrained:
    * "none": keep torchvision's random initialisation.
    * "imagenet": torchvision's IMAGENET1K_V1 weights of `arch`, read from
      `$TORCH_HOME/hub/checkpoints/` (for resnet50 the reference's `resnet50-19c8e357.pth` is
      preferred when present); downloaded there when absent. No file and no network ->
      `RecamInputError` saying where to put the file.
    * a path: a state_dict, or a dict holding one under "model" or "state_dict"; a "module."
      prefix (DataParallel) is removed.

    `fc.*` is dropped (spec §2.1: the only non-strict part of the reference's load); every other
    key and shape must match, else `RecamInputError` lists the differences.
    """
    if pretrained == "none":
        return
    if pretrained == "imagenet":
        state, source = _imagenet_state_dict(arch)
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise RecamInputError(
                f"recam: model.pretrained={pretrained} is not a file - give a state_dict path, "
                "or set model.pretrained=imagenet / none"
            )
        state, source = _read_state_dict(path), str(path)
    load_backbone_state_dict(module, state, source=source, arch=arch)
    log.info("loaded %s weights from %s", arch, source)


def load_backbone_state_dict(module: nn.Module, state: object, *, source: str, arch: str) -> None:
    """Strictly load a ResNet state_dict into `module`, after dropping `fc.*`.

    state: a mapping name -> tensor, or a checkpoint dict holding it under "model" or
    "state_dict". "module." prefixes are stripped. Missing `*.num_batches_tracked` entries (pre-0.4
    files such as `resnet50-19c8e357.pth` have none) are set to 0: fixed BN never reads them.
    Raises `RecamInputError` naming the first few missing, unexpected and mis-shaped keys.
    """
    state = _unwrap_state_dict(state, source=source)
    state = {key.removeprefix("module."): value for key, value in state.items()}
    state = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = module.state_dict()
    for key in expected:
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mis_shaped = [
        f"{key} {tuple(state[key].shape)} vs {tuple(expected[key].shape)}"
        for key in expected
        if key in state and tuple(state[key].shape) != tuple(expected[key].shape)
    ]
    if missing or unexpected or mis_shaped:
        problems = [
            f"{label} [{_first_few(keys)}]"
            for label, keys in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", mis_shaped),
            )
            if keys
        ]
        raise RecamInputError(
            f"recam: state_dict {source} does not fit the {arch} backbone: {'; '.join(problems)} - "
            f"give a torchvision-layout {arch} state_dict, or set model.pretrained=imagenet / none"
        )
    module.load_state_dict(state, strict=True)


def _unwrap_state_dict(state: object, *, source: str) -> dict[str, Tensor]:
    if isinstance(state, Mapping):
        for wrapper in ("state_dict", "model"):
            if isinstance(state.get(wrapper), Mapping):
                state = state[wrapper]
                break
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, Tensor) for key, value in state.items()
    ):
        raise RecamInputError(
            f"recam: {source} holds no state_dict (expected a dict of tensors, possibly under "
            "'model' or 'state_dict') - give a state_dict file, or set model.pretrained=imagenet / none"
        )
    return dict(state)


def _read_state_dict(path: Path) -> object:
    try:
        # weights_only: a weights file needs no arbitrary unpickling.
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise RecamInputError(
            f"recam: cannot read a state_dict from {path} ({reason}) - replace the file, or set model.pretrained=none"
        ) from err


def _imagenet_state_dict(arch: str) -> tuple[object, str]:
    url = IMAGENET_WEIGHTS[arch].url
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    target = checkpoints / Path(urlparse(url).path).name
    candidates = [checkpoints / LEGACY_IMAGENET_FILES[arch]] if arch in LEGACY_IMAGENET_FILES else []
    for path in [*candidates, target]:
        if path.is_file():
            return _read_state_dict(path), str(path)
    log.info("ImageNet weights for %s not in %s, downloading %s", arch, checkpoints, url)
    try:
        state = torch.hub.load_state_dict_from_url(url, model_dir=str(checkpoints), map_location="cpu")
    except OSError as err:  # URLError, DNS and socket errors: no network (or no write access)
        reason = " ".join(str(err).split())[:200]
        raise RecamInputError(
            f"recam: ImageNet weights for {arch} not found at {target} and cannot be downloaded "
            f"({reason}) - download {url} and put it there, or set model.pretrained=none / a state_dict path"
        ) from err
    return state, url


def _first_few(items: Iterable[str], count: int = 5) -> str:
    items = list(items)
    shown = ", ".join(items[:count])
    return shown if len(items) <= count else f"{shown}, ... (+{len(items) - count} more)"


def _check_freeze_upto(freeze_upto: str) -> None:
    if freeze_upto not in FROZEN_MODULES:
        raise RecamInputError(
            f"recam: model.freeze_upto={freeze_upto} is not supported - use one of {list(FROZEN_MODULES)}"
        )


def _out_channels(resnet: ResNet) -> int:
    last = resnet.layer4[-1]
    return (last.bn3 if isinstance(last, Bottleneck) else last.bn2).num_features


class Backbone(nn.Module):
    """The ResNet's modules (no `fc`), split into the reference's four stages, with freezing.

    Holds torchvision's `conv1, bn1, relu, maxpool, layer1 .. layer4` under their own names, so
    its state_dict keys are torchvision's minus `fc.*`. Stages (spec §2.1), for x (B, 3, H, W):

    * `stem`:   conv1, bn1, ReLU, max-pool        -> (B, 64, H/4, W/4)
    * `stage1`: stem + layer1                     -> (B, 4*64 or 64, H/4, W/4)
    * `stage2`: layer2                            -> (B, ., H/8, W/8)
    * `stage3`: layer3                            -> (B, ., H/16, W/16)   (H/8 at output stride 8)
    * `stage4`: layer4                            -> (B, out_channels, H/16, W/16) (or H/8)

    Sizes round up: an odd H gives ceil(H/16) rows at stride 16.
    `freeze_upto` (spec §2.2): "conv1" (ReCAM) freezes conv1 + bn1; "layer2" (IRN repo) also
    freezes layer1, layer2 and detaches the stage-2 output; "none" trains everything.
    """

    def __init__(self, resnet: ResNet, *, freeze_upto: str = "conv1") -> None:
        super().__init__()
        # Same names and registration order as torchvision, hence the same state_dict keys.
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4
        self.out_channels = _out_channels(resnet)
        self.freeze_upto = "none"
        self.freeze(freeze_upto)

    def freeze(self, freeze_upto: str) -> None:
        """Freeze the modules up to `freeze_upto` ("none" | "conv1" | "layer2"), unfreeze the rest
        of those modules. The choice is re-applied on every `.train()` call, as the reference does."""
        _check_freeze_upto(freeze_upto)
        for name in FROZEN_MODULES["layer2"]:
            getattr(self, name).requires_grad_(True)
        self.freeze_upto = freeze_upto
        self._apply_freeze()

    def _apply_freeze(self) -> None:
        for name in FROZEN_MODULES[self.freeze_upto]:
            module = getattr(self, name)
            module.requires_grad_(False)
            # Frozen means unchanged: with trainable BN (fixed_bn=False) eval mode also keeps their
            # running statistics still. With fixed BN this changes nothing.
            module.eval()

    def train(self, mode: bool = True) -> Backbone:
        """Set train/eval mode; in train mode re-freeze the frozen modules (reference behaviour)."""
        super().train(mode)
        if mode:
            self._apply_freeze()
        return self

    def stem(self, x: Tensor) -> Tensor:
        """conv1, bn1, ReLU, max-pool: (B, 3, H, W) -> (B, 64, ceil(H/4), ceil(W/4))."""
        return self.maxpool(self.relu(self.bn1(self.conv1(x))))

    def stage1(self, x: Tensor) -> Tensor:
        """stem + layer1: image (B, 3, H, W) -> (B, C1, ceil(H/4), ceil(W/4))."""
        return self.layer1(self.stem(x))

    def stage2(self, x: Tensor) -> Tensor:
        """layer2: (B, C1, h, w) -> (B, C2, ceil(h/2), ceil(w/2)); detached when layer2 is frozen."""
        x = self.layer2(x)
        # The IRN repo's gradient cut: nothing before it trains, so no graph is kept for it.
        return x.detach() if self.freeze_upto == "layer2" else x

    def stage3(self, x: Tensor) -> Tensor:
        """layer3: (B, C2, h, w) -> (B, C3, h/2, w/2) at output stride 16, (B, C3, h, w) at 8."""
        return self.layer3(x)

    def stage4(self, x: Tensor) -> Tensor:
        """layer4 (stride 1): (B, C3, h, w) -> (B, out_channels, h, w)."""
        return self.layer4(x)

    def forward_stages(self, x: Tensor) -> dict[str, Tensor]:
        """All taps: {"stem", "stage1", "stage2", "stage3", "stage4"} for x (B, 3, H, W)."""
        stem = self.stem(x)
        stage1 = self.layer1(stem)
        stage2 = self.stage2(stage1)
        stage3 = self.stage3(stage2)
        return {"stem": stem, "stage1": stage1, "stage2": stage2, "stage3": stage3, "stage4": self.stage4(stage3)}

    def forward(self, x: Tensor) -> Tensor:
        """Features f = stage4(x): (B, 3, H, W) -> (B, out_channels, ceil(H/16), ceil(W/16))."""
        return self.stage4(self.stage3(self.stage2(self.stage1(x))))

    def backbone_parameters(self) -> list[nn.Parameter]:
        """The trainable parameters (frozen ones left out), in state_dict order."""
        return [p for p in self.parameters() if p.requires_grad]


def build_backbone(
    *,
    arch: str = "resnet50",
    output_stride: int = 16,
    fixed_bn: bool = True,
    pretrained: str = "none",
    freeze_upto: str = "conv1",
) -> Backbone:
    """`Backbone(build_resnet(...), freeze_upto=...)`; arguments as in `build_resnet` and `Backbone`."""
    _check_freeze_upto(freeze_upto)  # before any weights are read or downloaded
    resnet = build_resnet(arch=arch, output_stride=output_stride, fixed_bn=fixed_bn, pretrained=pretrained)
    return Backbone(resnet, freeze_upto=freeze_upto)

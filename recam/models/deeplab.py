"""Segmentation networks of the last stage: DeepLab-v2 (spec §7.1) and torchvision's DeepLabV3.

Both build on torchvision (no forked ResNet file), with keyword-only builders listed in
`SEG_MODELS`, a dict in plain sight:

* `deeplabv2_<resnet>`: a torchvision ResNet (no `fc`), output stride 8 by dilation (layer3
  dilation 2 and layer4 dilation 4 in *every* block, as deeplab-pytorch's `_ResLayer`; stride 16:
  layer4 dilation 2 only), max-pool in ceil mode (the caffe layout, so a 321 crop gives 41x41
  logits and its 0.75 / 0.5 copies 31x31 / 21x21, as in the spec), and the DeepLab-v2 ASPP: four
  parallel 3x3 convs, rates 6/12/18/24, summed.
* `deeplabv3_resnet50/101`: `torchvision.models.segmentation.deeplabv3_*` without the aux head;
  its output is already upsampled to the input size.

`build_seg_model` wraps either in `MSC` (multi-scale inputs, spec §7.1): in training it returns the
list of logit maps [full, one per scale, pixel-wise max], in eval the max-fused map alone.
With fixed BN (the reference: BN in eval mode, BN parameters in no optimizer group) every
BatchNorm uses its running statistics and its parameters do not require gradients.

Deviation (spec §7.4), by default: the reference's backbone is the caffe-layout ResNet-101 with the
AdvCAM ImageNet weights (stride on each block's first 1x1 conv, BGR input with mean subtraction only);
we default to torchvision's v1.5 layout (stride on the 3x3 conv) with its ImageNet weights and RGB
mean/std input, which shifts results a little. `seg.pretrained=advcam:<path>` gives the published
hand-off exactly (recam/models/advcam.py).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.segmentation import deeplabv3_resnet50, deeplabv3_resnet101

from recam.errors import RecamInputError
from recam.models.advcam import PREFIX as ADVCAM_PREFIX, load_advcam, to_caffe_strides
from recam.models.backbone import RESNET_BUILDERS, Backbone, FixedBatchNorm2d, freeze_bn_stats, load_pretrained

ASPP_RATES = (6, 12, 18, 24)
MSC_SCALES = (0.5, 0.75)
SEG_OUTPUT_STRIDES = (8, 16)
LAYOUTS = ("torchvision", "caffe")


class ASPP(nn.Module):
    """DeepLab-v2 atrous spatial pyramid pooling: parallel 3x3 convs (padding = dilation = rate)
    from `in_channels` to `num_classes`, with bias, whose outputs are summed.

    Init N(0, 0.01), bias 0 (deeplab-pytorch). x: (B, C, h, w) -> (B, num_classes, h, w).
    """

    def __init__(self, in_channels: int, num_classes: int, rates: Sequence[int] = ASPP_RATES) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv2d(in_channels, num_classes, kernel_size=3, padding=rate, dilation=rate, bias=True) for rate in rates
        )
        for conv in self.convs:
            nn.init.normal_(conv.weight, mean=0.0, std=0.01)
            nn.init.constant_(conv.bias, 0.0)

    def forward(self, x: Tensor) -> Tensor:
        return sum(conv(x) for conv in self.convs)


def _block_convs(block: nn.Module) -> tuple[nn.Conv2d, list[nn.Conv2d]]:
    """(the strided conv, the 3x3 convs) of a torchvision ResNet block (v1.5: stride on the 3x3)."""
    if isinstance(block, Bottleneck):
        return block.conv2, [block.conv2]
    if isinstance(block, BasicBlock):
        return block.conv1, [block.conv1, block.conv2]
    raise TypeError(f"unknown ResNet block type {type(block).__name__}")


def dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Remove the stride of a ResNet layer and dilate every 3x3 conv of every block by `dilation`
    (padding = dilation keeps the size), in place: deeplab-pytorch's `_ResLayer(dilation=...)`.

    torchvision's `replace_stride_with_dilation` would keep the previous dilation in each layer's
    first block (1 in layer3, 2 in layer4); the reference dilates all blocks alike.
    """
    first = layer[0]
    strided, _ = _block_convs(first)
    strided.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    first.stride = 1
    for block in layer:
        for conv in _block_convs(block)[1]:
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


class DeepLabV2(nn.Module):
    """DeepLab-v2: dilated ResNet `backbone` + `ASPP`. x (B, 3, H, W) -> logits (B, K+1, h, w),
    h = ceil(H/8) rounded as the convs round (41 for 321) at output stride 8."""

    def __init__(self, backbone: Backbone, num_classes: int) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = ASPP(backbone.out_channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.aspp(self.backbone(x))


class TorchvisionDeepLabV3(nn.Module):
    """torchvision's DeepLabV3 (no aux head) returning its "out" logits (B, K+1, H, W) as a tensor."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.backbone = model.backbone
        self.classifier = model.classifier

    def forward(self, x: Tensor) -> Tensor:
        logits = self.classifier(self.backbone(x)["out"])
        # As torchvision's _SimpleSegmentationModel: bilinear to the input size.
        return F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)


class MSC(nn.Module):
    """Multi-scale inputs (spec §7.1, deeplab-pytorch `MSC`).

    The full input and bilinear copies at `scales` (align_corners False, size floor(H*s)) pass
    through `base`; every map is upsampled (bilinear) to the full input's logit size and the
    pixel-wise max taken. Training returns [full, *per-scale, max] (4 maps with two scales; only
    [full] without scales); eval returns the max-fused (B, K+1, h, w) map.
    """

    def __init__(self, base: nn.Module, scales: Sequence[float] = MSC_SCALES) -> None:
        super().__init__()
        self.base = base
        self.scales = tuple(float(s) for s in scales)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        logits = self.base(x)
        if not self.scales:
            return [logits] if self.training else logits
        size = logits.shape[-2:]
        pyramid = [
            self.base(
                F.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False, recompute_scale_factor=False)
            )
            for s in self.scales
        ]
        upsampled = [F.interpolate(p, size=size, mode="bilinear", align_corners=False) for p in pyramid]
        fused = torch.stack([logits, *upsampled]).amax(dim=0)
        return [logits, *pyramid, fused] if self.training else fused


def _is_bn(module: nn.Module) -> bool:
    return isinstance(module, (nn.BatchNorm2d, FixedBatchNorm2d))


def seg_param_groups(
    model: MSC, *, lr: float, weight_decay: float, head_lr_mult: float = 10.0, head_bias_lr_mult: float = 20.0
) -> list[dict]:
    """SGD groups of deeplab-pytorch (spec §7.1, "LR groups"), named "backbone", "head_weight",
    "head_bias" and, with trainable BN, "bn"; the head is `head_of(model)` (ASPP or classifier).

    * backbone: every parameter outside the head and outside BatchNorm layers (the ResNet convs),
      lr, weight_decay;
    * head_weight: the head's non-BN weights at lr * head_lr_mult, weight_decay;
    * head_bias: the head's non-BN biases at lr * head_bias_lr_mult, weight decay 0;
    * bn: BN weights and biases that require gradients (trainable BN, fixed_bn=False, not the
      reference) at lr, weight decay 0. Fixed BN parameters are in no group, as in the reference.
    """
    head_ids = {id(p) for p in head_of(model).parameters()}
    bn_ids = {id(p) for m in model.modules() if _is_bn(m) for p in m.parameters(recurse=False)}
    groups: dict[str, list[nn.Parameter]] = {"backbone": [], "head_weight": [], "head_bias": [], "bn": []}
    for name, param in model.named_parameters():
        if id(param) in bn_ids:
            if param.requires_grad:
                groups["bn"].append(param)
        elif id(param) in head_ids:
            groups["head_bias" if name.endswith("bias") else "head_weight"].append(param)
        elif param.requires_grad:
            groups["backbone"].append(param)
    settings = {
        "backbone": (lr, weight_decay),
        "head_weight": (lr * head_lr_mult, weight_decay),
        "head_bias": (lr * head_bias_lr_mult, 0.0),
        "bn": (lr, 0.0),
    }
    return [
        {"name": name, "params": params, "lr": settings[name][0], "weight_decay": settings[name][1]}
        for name, params in groups.items()
        if params
    ]


def _fix_bn(model: nn.Module) -> None:
    """BN with running statistics only and no trainable parameters (the reference's frozen BN)."""
    for module in model.modules():
        if _is_bn(module):
            module.requires_grad_(False)


def build_deeplabv2(
    *,
    arch: str = "resnet101",
    num_classes: int = 21,
    output_stride: int = 8,
    fixed_bn: bool = True,
    pretrained: str = "none",
    layout: str = "torchvision",
) -> DeepLabV2:
    """DeepLab-v2 on a torchvision ResNet (`arch` resnet18/34/50/101/152; the spec's is resnet101).

    output_stride 8 (spec): layer3 dilation 2, layer4 dilation 4; 16: layer4 dilation 2.
    fixed_bn: `FixedBatchNorm2d` with frozen parameters (spec) or trainable `nn.BatchNorm2d`
    (training from scratch). pretrained: "none" | "imagenet" | a state_dict path, loaded into
    the backbone strictly by `load_pretrained` (torchvision keys minus `fc.*`); ASPP stays random.
    layout "caffe" (implied by pretrained "advcam:<path>", recam/models/advcam.py): the stride of
    each downsampling block on its first 1x1 conv, the AdvCAM caffe-layout weights loaded.
    """
    if pretrained.startswith(ADVCAM_PREFIX):
        layout = "caffe"
    if layout not in LAYOUTS:
        raise RecamInputError(f"recam: layout={layout!r} - use one of {list(LAYOUTS)}")
    if arch not in RESNET_BUILDERS:
        raise RecamInputError(
            f"recam: seg.arch=deeplabv2_{arch} - the backbone must be one of {sorted(RESNET_BUILDERS)}"
        )
    if output_stride not in SEG_OUTPUT_STRIDES:
        raise RecamInputError(f"recam: seg.output_stride={output_stride} - use one of {list(SEG_OUTPUT_STRIDES)}")
    resnet = RESNET_BUILDERS[arch](weights=None, norm_layer=FixedBatchNorm2d if fixed_bn else nn.BatchNorm2d)
    resnet.fc = nn.Identity()
    # The caffe layout's ceil-mode pooling: same weights, and the spec's 41/31/21 logit sizes.
    resnet.maxpool.ceil_mode = True
    if output_stride == 8:
        dilate_layer(resnet.layer3, 2)
        dilate_layer(resnet.layer4, 4)
    else:
        dilate_layer(resnet.layer4, 2)
    if layout == "caffe":
        to_caffe_strides([resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4])
    backbone = Backbone(resnet, freeze_upto="none")
    if pretrained.startswith(ADVCAM_PREFIX):
        load_advcam(backbone, pretrained)
    else:
        load_pretrained(backbone, pretrained, arch=arch)
    model = DeepLabV2(backbone, num_classes)
    if fixed_bn:
        _fix_bn(model)
    return model


def build_deeplabv3(
    *,
    arch: str = "resnet101",
    num_classes: int = 21,
    output_stride: int = 8,
    fixed_bn: bool = True,
    pretrained: str = "none",
    layout: str = "torchvision",
) -> TorchvisionDeepLabV3:
    """torchvision's DeepLabV3 (ASPP with image pooling, BN head), `arch` resnet50 or resnet101,
    no aux head. output_stride must be 8 (torchvision's dilation). fixed_bn swaps every BN for
    `FixedBatchNorm2d` with frozen parameters (the head's BN then keeps its initial identity
    statistics: use fixed_bn=False to train it, torchvision's own recipe)."""
    builders = {"resnet50": deeplabv3_resnet50, "resnet101": deeplabv3_resnet101}
    if arch not in builders:
        raise RecamInputError(
            f"recam: seg.arch=deeplabv3_{arch} - torchvision's DeepLabV3 comes with {sorted(builders)}"
        )
    if output_stride != 8:
        raise RecamInputError(f"recam: seg.output_stride={output_stride} - torchvision's DeepLabV3 has output stride 8")
    if layout != "torchvision" or pretrained.startswith(ADVCAM_PREFIX):
        raise RecamInputError(
            "recam: seg.pretrained=advcam:... (caffe layout) is a DeepLab-v2 init - use seg.arch=deeplabv2_resnet101"
        )
    model = TorchvisionDeepLabV3(
        builders[arch](weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=False)
    )
    load_pretrained(model.backbone, pretrained, arch=arch)
    if fixed_bn:
        freeze_bn_stats(model)
        _fix_bn(model)
    return model


SEG_MODELS: dict[str, Callable[..., nn.Module]] = {
    **{f"deeplabv2_{arch}": functools.partial(build_deeplabv2, arch=arch) for arch in RESNET_BUILDERS},
    "deeplabv3_resnet50": functools.partial(build_deeplabv3, arch="resnet50"),
    "deeplabv3_resnet101": functools.partial(build_deeplabv3, arch="resnet101"),
}


def build_seg_model(
    *,
    name: str,
    num_classes: int,
    output_stride: int = 8,
    fixed_bn: bool = True,
    pretrained: str = "none",
    msc_scales: Sequence[float] = MSC_SCALES,
    layout: str = "torchvision",
) -> MSC:
    """`MSC(SEG_MODELS[name](...), msc_scales)`; num_classes counts background (21 on VOC);
    layout: torchvision (v1.5 strides) | caffe (the AdvCAM file's, see recam/models/advcam.py)."""
    if name not in SEG_MODELS:
        raise RecamInputError(f"recam: seg.arch={name} is not supported - use one of {sorted(SEG_MODELS)}")
    base = SEG_MODELS[name](
        num_classes=num_classes, output_stride=output_stride, fixed_bn=fixed_bn, pretrained=pretrained, layout=layout
    )
    return MSC(base, msc_scales)


def head_of(model: MSC) -> nn.Module:
    """The randomly initialised head whose parameters get the 10x / 20x rates (ASPP or classifier)."""
    base = model.base
    return base.aspp if isinstance(base, DeepLabV2) else base.classifier


__all__ = [
    "ASPP",
    "DeepLabV2",
    "MSC",
    "SEG_MODELS",
    "build_seg_model",
    "build_deeplabv2",
    "build_deeplabv3",
    "seg_param_groups",
    "head_of",
    "dilate_layer",
]

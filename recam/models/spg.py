"""SPG (Self-produced Guidance, ECCV 2018) networks: on torchvision's Inception-v3 and on our ResNet.

Spec: spg-spec.md §3 (layers), §6.1-6.2 (optimiser groups, pretrained mapping), §11 (PyTorch 0.3
semantics), §14 (defaults). The heads (reference names, so released checkpoints load by name):

* fc6 (3x3, C_top -> head) + ReLU, fc7_1 (3x3, head -> head) + ReLU, classier_1 (1x1, head -> K):
  `class_maps` (the localization maps `out1`); logits = their spatial mean;
* SPG-B: side3 (3x3 -> side, ReLU) on the B1 tap, side4 (3x3 -> side, ReLU) on the B2 tap, both
  followed by the *shared* side_all (3x3 side -> side, ReLU, 1x1 -> 1);
* SPG-C: branchB (3x3 head -> side, ReLU, 1x1 -> 1) on the fc7_1 output.

Taps: Inception: B1 = Mixed_5d, B2 = Mixed_6d (not Mixed_6e: spec §10 quirk 4), top = Mixed_6e,
all at stride 8. ResNet (our addition): B1 = layer2 (stride 8), B2 = layer3, top = layer4.

The reference's three `F.dropout(x, 0.5)` calls were identities on PyTorch 0.3 (spec §0): the
default `dropout=0.0` reproduces that; a positive value drops in training only (never at test,
unlike the unchanged source on torch >= 1.0).
"""

from __future__ import annotations

import abc
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.inception import BasicConv2d, InceptionA, InceptionB, InceptionC

from recam.errors import RecamInputError
from recam.models.backbone import Backbone, _read_state_dict, _unwrap_state_dict, build_resnet

log = logging.getLogger(__name__)

# The new (non-pretrained) layers of SPG; everything else comes from Inception-v3 (spec §6.2).
NEW_LAYERS = ("fc6", "fc7_1", "classier_1", "branchB", "side3", "side4", "side_all")
# torchvision's Inception-v3 ImageNet file: the spec's `inception_v3_google-1a9a5a14.pth` (older
# torchvision) or today's `inception_v3_google-0cc3c7bd.pth`; same key layout.
INCEPTION_FILES = ("inception_v3_google-1a9a5a14.pth", "inception_v3_google-0cc3c7bd.pth")
INCEPTION_URL = "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth"
ARCHS = ("inception_v3", "resnet18", "resnet34", "resnet50", "resnet101", "resnet152")


class StrideOneInceptionB(InceptionB):
    """Mixed_6a of SPG: torchvision's InceptionB with stride 1 and padding 1 in its 3x3 branch,
    its double-3x3 branch and its max-pool branch (spec §3.1), so the feature stride stays 8.
    Same weights and names as InceptionB."""

    def __init__(self, in_channels: int) -> None:
        super().__init__(in_channels)
        for conv in (self.branch3x3.conv, self.branch3x3dbl_3.conv):
            conv.stride, conv.padding = (1, 1), (1, 1)

    def _forward(self, x: Tensor) -> list[Tensor]:
        branch3x3 = self.branch3x3(x)
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return [branch3x3, branch3x3dbl, F.max_pool2d(x, kernel_size=3, stride=1, padding=1)]


class SPGNet(nn.Module, abc.ABC):
    """SPG heads over a backbone with three taps; subclasses define `taps(x)`.

    Subclasses build their backbone, then call `_add_heads`.
    forward(x (B, 3, H, W)) -> {"logits": (B, K), "class_maps": (B, K, h, w),
    "side3", "side4", "out_seg": (B, 1, h', w') logit maps}; the sigmoids are in the loss.
    """

    def _add_heads(
        self,
        *,
        b1_channels: int,
        b2_channels: int,
        top_channels: int,
        num_classes: int,
        head_channels: int = 1024,
        side_channels: int = 512,
        dropout: float = 0.0,
    ) -> None:
        """Register the heads after the backbone, so the state_dict order is the reference's
        (backbone, fc6, fc7_1, classier_1, branchB, side3, side4, side_all)."""
        self.dropout = dropout
        self.fc6 = nn.Sequential(
            nn.Conv2d(top_channels, head_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.fc7_1 = nn.Sequential(
            nn.Conv2d(head_channels, head_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.classier_1 = nn.Conv2d(head_channels, num_classes, kernel_size=1)
        self.branchB = nn.Sequential(
            nn.Conv2d(head_channels, side_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(side_channels, 1, kernel_size=1),
        )
        self.side3 = nn.Sequential(
            nn.Conv2d(b1_channels, side_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.side4 = nn.Sequential(
            nn.Conv2d(b2_channels, side_channels, kernel_size=3, padding=1), nn.ReLU(inplace=True)
        )
        self.side_all = nn.Sequential(
            nn.Conv2d(side_channels, side_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(side_channels, 1, kernel_size=1),
        )
        for name in NEW_LAYERS:
            init_xavier(getattr(self, name))

    @property
    def num_classes(self) -> int:
        return self.classier_1.out_channels

    @abc.abstractmethod
    def taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B1 input, B2 input, top features) of the backbone (each architecture defines it)."""

    def _drop(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.dropout, training=self.training) if self.dropout > 0 else x

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        b1, b2, top = self.taps(x)
        feat = self._drop(self.fc7_1(self._drop(self.fc6(self._drop(top)))))
        class_maps = self.classier_1(feat)
        return {
            "logits": class_maps.mean(dim=(2, 3)),
            "class_maps": class_maps,
            "side3": self.side_all(self.side3(b1)),
            "side4": self.side_all(self.side4(b2)),
            "out_seg": self.branchB(feat),
        }


class SPGInception(SPGNet):
    """SPG on Inception-v3 through Mixed_6e, stride 8 (spec §3.1): Conv2d_1a with padding 1,
    both max-pools 3/2 with padding 1 and ceil mode, a stride-1 Mixed_6a. BN eps 1e-3 (torchvision's
    BasicConv2d). Parameter names are the reference's, so a released checkpoint (after removing
    `module.`) and torchvision's Inception-v3 file load by name."""

    def __init__(self, *, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2, padding=1)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.maxpool1 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.maxpool2 = nn.MaxPool2d(kernel_size=3, stride=2, padding=1, ceil_mode=True)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = StrideOneInceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        # spec §3.3: Xavier-uniform convs, zero biases, BN gamma 1 / beta 0 (then the pretrained file)
        for module in self.modules():
            if isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        init_xavier(self)
        self._add_heads(
            b1_channels=288,
            b2_channels=768,
            top_channels=768,
            num_classes=num_classes,
            head_channels=1024,
            side_channels=512,
            dropout=dropout,
        )

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.maxpool1(self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x))))
        x = self.maxpool2(self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x)))
        mixed_5d = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))
        mixed_6d = self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(self.Mixed_6a(mixed_5d))))
        return mixed_5d, mixed_6d, self.Mixed_6e(mixed_6d)


class SPGResNet(SPGNet):
    """The same SPG heads on our ResNet `Backbone` (recam/models/backbone.py): B1 on layer2,
    B2 on layer3, fc6 on layer4. Backbone keys stay torchvision's under `backbone.`."""

    def __init__(
        self,
        backbone: Backbone,
        *,
        num_classes: int,
        head_channels: int = 1024,
        side_channels: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self._add_heads(
            b1_channels=_block_out(backbone.layer2),
            b2_channels=_block_out(backbone.layer3),
            top_channels=backbone.out_channels,
            num_classes=num_classes,
            head_channels=head_channels,
            side_channels=side_channels,
            dropout=dropout,
        )

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        f2 = self.backbone.stage2(self.backbone.stage1(x))
        f3 = self.backbone.stage3(f2)
        return f2, f3, self.backbone.stage4(f3)


def _block_out(layer: nn.Sequential) -> int:
    last = layer[-1]
    return (last.bn3 if hasattr(last, "bn3") else last.bn2).num_features


def init_xavier(module: nn.Module) -> None:
    """Xavier-uniform weights and zero biases for every conv in `module` (spec §3.3)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def build_spg(
    *,
    arch: str,
    num_classes: int,
    pretrained: str = "none",
    dropout: float = 0.0,
    head_channels: int = 1024,
    side_channels: int = 512,
    output_stride: int = 16,
    fixed_bn: bool = False,
) -> SPGNet:
    """SPG on `arch` (inception_v3 | a torchvision ResNet). pretrained: "none", "imagenet"
    (Inception: torchvision's inception_v3_google file from the hub cache, by name, non-strict,
    spec §6.2; ResNet: backbone.py's loader) or a state_dict path. The Inception network has the
    reference's fixed widths (head 1024, side 512); the ResNet variant takes them as arguments.
    Reference BN is in train mode (spec §6.1): fixed_bn only applies to the ResNet variant."""
    if arch not in ARCHS:
        raise RecamInputError(f"recam: spg.arch={arch!r} is not supported - use one of {', '.join(ARCHS)}")
    if arch == "inception_v3":
        model = SPGInception(num_classes=num_classes, dropout=dropout)
        if pretrained != "none":
            load_inception_pretrained(model, inception_state_dict(pretrained))
        return model
    backbone = Backbone(
        build_resnet(arch=arch, output_stride=output_stride, fixed_bn=fixed_bn, pretrained=pretrained),
        freeze_upto="none",
    )
    return SPGResNet(
        backbone, num_classes=num_classes, head_channels=head_channels, side_channels=side_channels, dropout=dropout
    )


def inception_state_dict(pretrained: str) -> dict[str, Tensor]:
    """The Inception-v3 state_dict for `pretrained` ("imagenet" = the torch hub cache, or a path).
    torchvision's file cannot be downloaded here: one error line names the file and the folder."""
    if pretrained == "imagenet":
        folder = Path(torch.hub.get_dir()) / "checkpoints"
        for name in INCEPTION_FILES:
            if (folder / name).is_file():
                return _unwrap_state_dict(_read_state_dict(folder / name), source=str(folder / name))
        raise RecamInputError(
            f"recam: Inception-v3 ImageNet weights not found: put {INCEPTION_FILES[1]} (from {INCEPTION_URL}) "
            f"or {INCEPTION_FILES[0]} in {folder}, or set spg.pretrained=none / a state_dict path"
        )
    path = Path(pretrained)
    if not path.is_file():
        raise RecamInputError(
            f"recam: spg.pretrained={pretrained} is not a file - give a state_dict path, "
            "or set spg.pretrained=imagenet / none"
        )
    return _unwrap_state_dict(_read_state_dict(path), source=str(path))


def load_inception_pretrained(model: nn.Module, state: Mapping[str, Tensor]) -> dict[str, list[str]]:
    """The reference `Restore.restore` of a plain state dict: non-strict, by name (spec §6.2).

    `module.` prefixes are removed. Every key the model has is copied (shapes must match: a
    mismatch raises, since it means another architecture); the rest (Mixed_7*, AuxLogits, fc) is
    ignored. Returns {"loaded": model keys taken from the file, "unused": file keys ignored}.
    """
    state = {key.removeprefix("module."): value for key, value in state.items()}
    own = model.state_dict()
    loaded = [key for key in own if key in state]
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in loaded if state[k].shape != own[k].shape]
    if wrong:
        raise RecamInputError(
            f"recam: the Inception-v3 weights do not fit SPG: shape mismatches {wrong[:3]} - "
            "give torchvision's inception_v3_google file"
        )
    if not loaded:
        raise RecamInputError(
            "recam: the pretrained file shares no key with SPG's Inception-v3 (a VGG file? "
            "spec §10 quirk 8) - give torchvision's inception_v3_google file"
        )
    with torch.no_grad():
        for key in loaded:
            own[key].copy_(state[key])
    unused = [key for key in state if key not in own]
    log.info("SPG: %d tensors loaded from the Inception-v3 file, %d of its keys unused", len(loaded), len(unused))
    return {"loaded": loaded, "unused": unused}


def strip_module_prefix(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A released SPG checkpoint's keys carry DataParallel's `module.` (spec §1): remove it."""
    return {key.removeprefix("module."): value for key, value in state.items()}


def param_groups(
    named: Iterable[tuple[str, nn.Parameter]], *, lr: float, weight_decay: float, new_layer_lr_mult: float = 1.0
) -> list[dict]:
    """The reference `get_finetune_optimizer` groups (spec §6.1): 0 weights (lr), 1 biases (2 lr),
    2 "new" weights (m lr), 3 "new" biases (2 m lr); weight decay on every group.

    new_layer_lr_mult == 1 reproduces the code: "new" means a name containing `cls`, which no SPG
    name does (the classifier is `classier_1`), so groups 2-3 are empty and their rates 10/20 x lr
    are never used. Another value (the paper: 10) puts NEW_LAYERS in groups 2-3 at m and 2 m x lr.
    A parameter is a "weight" when its name contains `weight` (BN gamma included), else a bias.
    """
    reference = new_layer_lr_mult == 1.0
    mults = (1.0, 2.0, 10.0, 20.0) if reference else (1.0, 2.0, new_layer_lr_mult, 2.0 * new_layer_lr_mult)

    def is_new(name: str) -> bool:
        return "cls" in name if reference else name.removeprefix("module.").split(".")[0] in NEW_LAYERS

    groups: list[list[nn.Parameter]] = [[], [], [], []]
    for name, param in named:
        if param.requires_grad:
            groups[2 * is_new(name) + ("weight" not in name)].append(param)
    return [{"params": params, "lr": lr * mult, "weight_decay": weight_decay} for params, mult in zip(groups, mults)]

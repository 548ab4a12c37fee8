"""IRN, the inter-pixel relation network: frozen ResNet + boundary and displacement heads (spec §6b).

The backbone is a fresh (ImageNet, in real runs) torchvision ResNet-50 with output stride 16 and
fixed BN; it is completely frozen: no parameter gets a gradient, its five taps are detached and
it stays in eval mode whatever `.train()` is called with. Only the two heads train:

* boundary (edge) branch `fc_edge1..6`: one 32-channel unit per tap, upsampled to stride 4,
  concatenated (160 channels) and reduced to one edge logit per stride-4 pixel;
* displacement branch `fc_dp1..7`: a small decoder to a 2-channel (y, x) displacement field at
  stride 4, minus the `mean_shift` buffer in eval mode (used by instance segmentation only).

state_dict keys (reference IRN `resnet50_irn.Net` -> ours):

* `resnet50.<torchvision key>` -> `backbone.<torchvision key>` (as `CamNet`).
* `mean_shift.running_mean`, `fc_edge{1..5}.{0,1}.*`, `fc_edge6.*`, `fc_dp{1..6}.{0,1}.*`,
  `fc_dp7.{0,1,3}.*`: the same names, in the same order (the golden `head_param_names`).
* The reference's aliases are dropped: its `stage1..5.*` and `backbone.*` (ModuleLists of the
  ResNet's modules), `edge_layers.*`, `dp_layers.*`, and `fc_dp7.4.running_mean`, which is the
  `mean_shift` module registered a second time as the last element of `fc_dp7`. We apply the
  mean shift after `fc_dp7` in `forward` instead, so each tensor has exactly one key.
  `convert_reference_state_dict` performs this mapping.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from recam.models.backbone import Backbone, build_backbone

# The reference trains the displacement branch at 10x the boundary branch's rate (spec §6b).
DP_LR_MULT = 10.0
# Edge/displacement outputs live on the stride-4 grid of the x2 tap.
OUTPUT_STRIDE = 4
_REFERENCE_ALIASES = ("stage1.", "stage2.", "stage3.", "stage4.", "stage5.", "backbone.", "edge_layers.", "dp_layers.")
_REFERENCE_MEAN_SHIFT_ALIAS = "fc_dp7.4.running_mean"


class MeanShift(nn.Module):
    """Subtracts a stored per-channel mean in eval mode; the identity in train mode.

    running_mean: (C,) buffer, zeros until the training stage stores the mean displacement.
    x: (B, C, h, w) -> (B, C, h, w).
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.register_buffer("running_mean", torch.zeros(num_features))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return x
        return x - self.running_mean.view(1, -1, 1, 1)


def _unit(in_channels: int, out_channels: int, groups: int, upsample: int = 1) -> nn.Sequential:
    """1x1 conv (no bias) -> GroupNorm(groups) -> [bilinear x upsample] -> ReLU.

    The conv and GN sit at indices 0 and 1 as in the reference, so the keys are `.0.weight`,
    `.1.weight`, `.1.bias`. ReLU comes after the upsampling (the reference's order; the two do
    not commute).
    """
    layers: list[nn.Module] = [
        nn.Conv2d(in_channels, out_channels, kernel_size=1, bias=False),
        nn.GroupNorm(groups, out_channels),
    ]
    if upsample > 1:
        layers.append(nn.Upsample(scale_factor=upsample, mode="bilinear", align_corners=False))
    layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _crop_to(x: Tensor, like: Tensor) -> Tensor:
    """Keep the top-left (h, w) of x, (h, w) = like's spatial size (upsampled odd sizes overshoot)."""
    return x[..., : like.shape[2], : like.shape[3]]


def _layer_channels(layer: nn.Sequential) -> int:
    last = layer[-1]
    if isinstance(last, Bottleneck):
        return last.bn3.num_features
    if isinstance(last, BasicBlock):
        return last.bn2.num_features
    raise TypeError(f"unknown ResNet block type {type(last).__name__}")


def stride4_size(height: int, width: int) -> tuple[int, int]:
    """The stride-4 output size of an (H, W) image: ((H - 1)//4 + 1, (W - 1)//4 + 1)."""
    return (height - 1) // OUTPUT_STRIDE + 1, (width - 1) // OUTPUT_STRIDE + 1


class IRNet(nn.Module):
    """Frozen backbone + boundary branch + displacement branch (spec §6b, golden irn_edge_forward).

    forward: x (B, 3, H, W) -> {"edge_logits": (B, 1, h4, w4), "dp": (B, 2, h4, w4)} with
    (h4, w4) = (ceil(H/4), ceil(W/4)), the size of the layer1 tap. In eval mode `dp` has the
    mean shift subtracted.
    """

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone
        # Frozen completely (spec §6b): no parameter of it trains, so none needs a gradient.
        self.backbone.requires_grad_(False)
        self.backbone.eval()
        c1 = backbone.conv1.out_channels
        c2, c3, c4, c5 = (_layer_channels(getattr(backbone, f"layer{i}")) for i in range(1, 5))

        # Registered before the heads: the reference's state-dict order (golden head_param_names).
        self.mean_shift = MeanShift(2)

        self.fc_edge1 = _unit(c1, 32, 4)
        self.fc_edge2 = _unit(c2, 32, 4)
        self.fc_edge3 = _unit(c3, 32, 4, upsample=2)
        self.fc_edge4 = _unit(c4, 32, 4, upsample=4)
        self.fc_edge5 = _unit(c5, 32, 4, upsample=4)
        self.fc_edge6 = nn.Conv2d(5 * 32, 1, kernel_size=1, bias=True)

        self.fc_dp1 = _unit(c1, 64, 8)
        self.fc_dp2 = _unit(c2, 128, 16)
        self.fc_dp3 = _unit(c3, 256, 16)
        self.fc_dp4 = _unit(c4, 256, 16, upsample=2)
        self.fc_dp5 = _unit(c5, 256, 16, upsample=2)
        self.fc_dp6 = _unit(3 * 256, 256, 16, upsample=2)
        # Indices 0, 1, 3 hold tensors (2 is the ReLU), as the reference's first four elements.
        self.fc_dp7 = nn.Sequential(
            nn.Conv2d(64 + 128 + 256, 256, kernel_size=1, bias=False),
            nn.GroupNorm(16, 256),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 2, kernel_size=1, bias=False),
        )

    def edge_modules(self) -> list[nn.Module]:
        """The boundary branch fc_edge1..6."""
        return [getattr(self, f"fc_edge{i}") for i in range(1, 7)]

    def dp_modules(self) -> list[nn.Module]:
        """The displacement branch fc_dp1..7 (the mean shift buffer holds no parameter)."""
        return [getattr(self, f"fc_dp{i}") for i in range(1, 8)]

    def train(self, mode: bool = True) -> IRNet:
        """Set the heads' mode; the backbone stays in eval mode (frozen, spec §6b)."""
        super().train(mode)
        self.backbone.eval()
        return self

    def taps(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Detached backbone taps x1..x5 for x (B, 3, H, W).

        x1 stem (64, /4), x2 layer1 (256, /4), x3 layer2 (512, /8), x4 layer3 (1024, /16),
        x5 layer4 (2048, /16); channels for ResNet-50.
        """
        # No graph through the frozen backbone: nothing there trains.
        with torch.no_grad():
            stages = self.backbone.forward_stages(x)
        return tuple(stages[name].detach() for name in ("stem", "stage1", "stage2", "stage3", "stage4"))

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Edge logits and displacement field: x (B, 3, H, W) -> {"edge_logits": (B, 1, h4, w4),
        "dp": (B, 2, h4, w4)}."""
        x1, x2, x3, x4, x5 = self.taps(x)

        edge2 = self.fc_edge2(x2)
        edges = [
            self.fc_edge1(x1),
            edge2,
            _crop_to(self.fc_edge3(x3), edge2),
            _crop_to(self.fc_edge4(x4), edge2),
            _crop_to(self.fc_edge5(x5), edge2),
        ]
        edge_logits = self.fc_edge6(torch.cat(edges, dim=1))

        dp1 = self.fc_dp1(x1)
        dp2 = self.fc_dp2(x2)
        dp3 = self.fc_dp3(x3)
        dp4 = _crop_to(self.fc_dp4(x4), dp3)
        dp5 = _crop_to(self.fc_dp5(x5), dp3)
        dp6 = _crop_to(self.fc_dp6(torch.cat([dp3, dp4, dp5], dim=1)), dp2)
        dp = self.mean_shift(self.fc_dp7(torch.cat([dp1, dp2, dp6], dim=1)))
        return {"edge_logits": edge_logits, "dp": dp}

    def infer_edge_dp(self, x: Tensor) -> dict[str, Tensor]:
        """Inference boundary map and displacement field of one image (spec §6c step 1).

        x: (1, 3, H, W) normalised image, full size, no padding (ReCAM's choice; the IRN repo pads
        to 512). Runs on [x, mirror(x)], crops both outputs to (h, w) = ((H-1)//4 + 1,
        (W-1)//4 + 1) and returns {"edge": sigmoid(e[0]/2 + mirror(e[1])/2) (1, h, w),
        "dp": dp[0] (2, h, w)}: the logits are averaged, then squashed. Call in eval mode, so
        that the mean shift is subtracted.
        """
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"infer_edge_dp takes one image (1, 3, H, W), got shape {tuple(x.shape)}")
        h, w = stride4_size(x.shape[2], x.shape[3])
        out = self(torch.cat([x, x.flip(-1)], dim=0))
        edge_logits = out["edge_logits"][..., :h, :w]
        dp = out["dp"][..., :h, :w]
        edge = torch.sigmoid(edge_logits[0] / 2 + edge_logits[1].flip(-1) / 2)
        return {"edge": edge, "dp": dp[0]}

    def param_groups(self, lr: float, weight_decay: float, dp_lr_mult: float = DP_LR_MULT) -> list[dict]:
        """SGD groups (spec §6b): boundary branch at `lr`, displacement branch at dp_lr_mult·lr
        (10), both with `weight_decay`. The frozen backbone is in neither. Groups are named
        "edge" / "displacement"."""
        edge = [p for m in self.edge_modules() for p in m.parameters()]
        dp = [p for m in self.dp_modules() for p in m.parameters()]
        return [
            {"name": "edge", "params": edge, "lr": lr, "weight_decay": weight_decay},
            {"name": "displacement", "params": dp, "lr": lr * dp_lr_mult, "weight_decay": weight_decay},
        ]

    @torch.no_grad()
    def set_mean_shift(self, mean: Tensor) -> None:
        """Store the mean displacement (2,) measured after training (spec §6b, "After training")."""
        self.mean_shift.running_mean.copy_(mean.to(self.mean_shift.running_mean))


def convert_reference_state_dict(state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A reference IRN (`resnet50_irn.Net`) state_dict in our key names (module docstring).

    `resnet50.*` -> `backbone.*`; the reference's alias keys (`stage1..5.*`, its `backbone.*`
    ModuleList, `edge_layers.*`, `dp_layers.*`, `fc_dp7.4.running_mean`) are dropped, as they
    repeat tensors held under another key; every other key is kept unchanged.
    """
    converted: dict[str, Tensor] = {}
    for key, value in state.items():
        key = key.removeprefix("module.")
        if key.startswith("resnet50."):
            converted["backbone." + key.removeprefix("resnet50.")] = value
        elif key == _REFERENCE_MEAN_SHIFT_ALIAS or key.startswith(_REFERENCE_ALIASES):
            continue
        else:
            converted[key] = value
    return converted


def build_irn(*, arch: str = "resnet50", pretrained: str = "none") -> IRNet:
    """The IRN (spec §6b): a frozen fixed-BN `arch` backbone at output stride 16 plus the heads.

    pretrained: "none" | "imagenet" | a state_dict path, for the backbone only. Real runs use
    "imagenet": a fresh ImageNet ResNet, not the CAM/ReCAM classifier's weights. The heads keep
    PyTorch's default initialisation, as in the reference.
    """
    # freeze_upto="layer2" is the IRN repo's setting; IRNet then freezes the rest too.
    backbone = build_backbone(arch=arch, output_stride=16, fixed_bn=True, pretrained=pretrained, freeze_upto="layer2")
    return IRNet(backbone)

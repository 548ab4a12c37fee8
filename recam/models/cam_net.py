"""The CAM classifier: ResNet backbone + bias-free 1x1 classifier (spec §2.3).

Training logits are z = W · GAP(f) with f = stage4(x); because the head is linear this equals
GAP(W f), the spatial mean of the pre-ReLU class maps. The CAM of class c is ReLU(W_c · f), the
same weights applied at every pixel. At ReCAM inference the per-pixel weight is W ⊙ V instead of
W (spec §4.1), which `class_maps(features, weight)` takes as an argument.

state_dict keys: `backbone.<torchvision key>` (`backbone.conv1.weight`, ...,
`backbone.layer4.2.bn3.num_batches_tracked`, no `fc.*`) and `classifier.weight` (K, C, 1, 1).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from recam.errors import RecamInputError
from recam.models.backbone import Backbone, build_backbone


class CamNet(nn.Module):
    """Backbone + `classifier = Conv2d(C, K, 1, bias=False)` with PyTorch's default init.

    forward: x (B, 3, H, W) -> {"logits": (B, K), "features": (B, C, h, w)}, h = ceil(H/16) at
    output stride 16. Works with channels_last tensors and on CPU.
    """

    def __init__(self, backbone: Backbone, *, num_classes: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise RecamInputError(f"recam: num_classes={num_classes} - a classifier needs at least one class")
        self.backbone = backbone
        self.classifier = nn.Conv2d(backbone.out_channels, num_classes, kernel_size=1, bias=False)

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        """Logits z = W · GAP(stage4(x)) (spec §2.3) and the stage-4 features.

        x: (B, 3, H, W) normalised image. Returns {"logits": (B, K), "features": (B, C, h, w)}.
        """
        features = self.backbone(x)
        # Pool first, then the 1x1 conv: the reference's order (gap2d, then classifier), which
        # costs K*C per image instead of K*C*h*w.
        pooled = features.mean(dim=(2, 3), keepdim=True)
        logits = self.classifier(pooled).flatten(1)
        return {"logits": logits, "features": features}

    def class_maps(self, features: Tensor, weight: Tensor | None = None) -> Tensor:
        """Pre-ReLU class maps M ⋆ f: the 1x1 convolution of the features with a weight matrix.

        features: (B, C, h, w). weight: None for the classifier's W, or a (K, C) / (K, C, 1, 1)
        matrix such as ReCAM's W ⊙ V (spec §4.1); same dtype and device as `features`.
        Returns (B, K, h, w).
        """
        if weight is None:
            weight = self.classifier.weight
        elif weight.ndim == 2:
            weight = weight[:, :, None, None]
        elif weight.ndim != 4:
            raise ValueError(f"class-map weight must be (K, C) or (K, C, 1, 1), got {tuple(weight.shape)}")
        return F.conv2d(features, weight)

    def cams(self, x: Tensor, weight: Tensor | None = None) -> Tensor:
        """CAMs ReLU(M ⋆ stage4(x)) (spec §2.3, §4.2 step 3): x (B, 3, H, W) -> (B, K, h, w), >= 0.

        weight as in `class_maps` (None = the classifier's W)."""
        return F.relu(self.class_maps(self.backbone(x), weight))

    def param_groups(self, *, lr: float, head_lr_mult: float, weight_decay: float) -> list[dict]:
        """SGD parameter groups (spec §2.5-2.6): the trainable backbone parameters at `lr`, the
        classifier at `lr * head_lr_mult`, both with `weight_decay`.

        Frozen parameters (conv1/bn1, ...) are left out: the reference keeps them in the optimizer
        with no gradient, which means no update and no weight decay, the same thing. Each group
        carries a "name" ("backbone" / "classifier") for logging and schedules.
        """
        return [
            {"name": "backbone", "params": self.backbone.backbone_parameters(), "lr": lr, "weight_decay": weight_decay},
            {
                "name": "classifier",
                "params": [p for p in self.classifier.parameters() if p.requires_grad],
                "lr": lr * head_lr_mult,
                "weight_decay": weight_decay,
            },
        ]


def build_cam_net(
    *,
    arch: str = "resnet50",
    num_classes: int = 20,
    output_stride: int = 16,
    fixed_bn: bool = True,
    pretrained: str = "none",
    freeze_upto: str = "conv1",
) -> CamNet:
    """The stage-1 CAM network (spec §2): `CamNet(build_backbone(...), num_classes=...)`.

    arch: torchvision ResNet name; output_stride: 16 (reference) or 8; fixed_bn: BN always uses
    running stats; pretrained: "none" | "imagenet" | state_dict path (backbone only, `fc.*`
    dropped); freeze_upto: "conv1" (ReCAM) | "layer2" (IRN repo) | "none".
    The classifier keeps PyTorch's default Conv2d initialisation, as in the reference.
    """
    backbone = build_backbone(
        arch=arch,
        output_stride=output_stride,
        fixed_bn=fixed_bn,
        pretrained=pretrained,
        freeze_upto=freeze_upto,
    )
    return CamNet(backbone, num_classes=num_classes)

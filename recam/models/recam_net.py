"""The ReCAM training network: the CAM classifier plus the SCE class predictor V (spec §3)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from recam.cams.fusion import combine_weights
from recam.models.cam_net import CamNet
from recam.models.recam_head import class_features, normalize_cams, recam_ce_loss


class RecamNet(nn.Module):
    """CamNet (backbone + BCE head W) and `predictor`, a bias-free 1x1 conv V (K x C), default init.

    State-dict keys: `cam_net.*` (exactly a CamNet's keys) and `predictor.weight`.
    """

    def __init__(self, cam_net: CamNet) -> None:
        super().__init__()
        self.cam_net = cam_net
        weight = cam_net.classifier.weight
        self.predictor = nn.Conv2d(weight.shape[1], weight.shape[0], kernel_size=1, bias=False)

    def forward(self, x: Tensor, labels: Tensor) -> dict[str, Tensor]:
        """x: (B, 3, H, W); labels: (B, K) multi-hot. Returns the loss parts of spec §3.1-3.2:
        bce (multilabel soft margin of z = W GAP(f)), sce (the predictor's softmax CE over each
        image's positive classes), acc (its diagnostic accuracy)."""
        out = self.cam_net(x)
        # Under autocast (cam/recam.amp) only the backbone and the BCE head run in bf16/fp16: the class
        # maps, their max-normalisation, the class features and the SCE loss stay float32, as in the
        # reference, since autocast would otherwise run the 1x1 conv and the bmm in half precision.
        with torch.autocast(x.device.type, enabled=False):
            feats = out["features"].float()
            bce = F.multilabel_soft_margin_loss(out["logits"].float(), labels)
            cams = normalize_cams(F.relu(self.cam_net.class_maps(feats)))  # all K classes, differentiable
            sce = recam_ce_loss(class_features(cams, feats), self.predictor.weight.float(), labels)
        return {"bce": bce, "sce": sce["loss"], "acc": sce["acc"]}

    def param_groups(self, *, lr: float, backbone_lr_mult: float, weight_decay: float) -> list[dict]:
        """Spec §3.4: backbone and BCE head at backbone_lr_mult x lr (no 10x), predictor at lr."""
        groups = self.cam_net.param_groups(lr=lr * backbone_lr_mult, head_lr_mult=1.0, weight_decay=weight_decay)
        groups.append({"params": [self.predictor.weight], "lr": lr, "weight_decay": weight_decay})
        return groups

    def cam_weight(self, fused: bool = True) -> Tensor:
        """The (K, C) class-map weight for seed export: W (.) V (spec §4.1), or W alone."""
        weight = self.cam_net.classifier.weight.flatten(1)
        return combine_weights(weight, self.predictor.weight.flatten(1)) if fused else weight

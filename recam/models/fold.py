"""Inference-only speed-up: BatchNorm folded into the preceding convolution.

In eval mode (and always for `FixedBatchNorm2d`) BN is the affine map
`y = (x - mean) / sqrt(var + eps) * gamma + beta`, so `bn(conv(x))` equals one convolution with
weight `W * s` and bias `(b - mean) * s + beta`, `s = gamma / sqrt(var + eps)`
(torch.nn.utils.fusion.fuse_conv_bn_eval). On CPU this removes the BN passes over every
activation, which are memory-bound (scripts/bench_seeds.py --reference measures it); the numbers
change by float rounding only (the product is taken once in the weights instead of per pixel).
Never for training: the folded model has no BN to update and no BN keys in its state_dict.
"""

from __future__ import annotations

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

# (conv, bn) attribute pairs of torchvision's ResNet stem and blocks; `downsample` is (conv, bn).
PAIRS = (("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3"))


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every (conv, BN) pair of a torchvision-style ResNet inside `model` in place and return
    it in eval mode: the stem's conv1/bn1, each block's conv{1,2,3}/bn{1,2,3} and downsample[0]/[1].
    Each BN becomes nn.Identity. Other modules are left as they are."""
    model.eval()
    for module in model.modules():
        for conv_name, bn_name in PAIRS:
            conv, bn = getattr(module, conv_name, None), getattr(module, bn_name, None)
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                setattr(module, conv_name, fuse_conv_bn_eval(conv, bn))
                setattr(module, bn_name, nn.Identity())
        down = getattr(module, "downsample", None)
        if (
            isinstance(down, nn.Sequential)
            and len(down) == 2
            and isinstance(down[0], nn.Conv2d)
            and isinstance(down[1], nn.BatchNorm2d)
        ):
            module.downsample = nn.Sequential(fuse_conv_bn_eval(down[0], down[1]), nn.Identity())
    return model

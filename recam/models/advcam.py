"""The published DeepLab hand-off: AdvCAM's ImageNet ResNet-101 "deeplabv1_resnet101-imagenet" file
(spec §7.1 "Init", §7.4), loaded into our torchvision-built DeepLab-v2 (`seg.pretrained=advcam:<path>`).

That file follows deeplab-pytorch's caffe layout:

* keys `layer1.conv1.{conv,bn}` (stem), `layer{2..5}.block{n}.{reduce,conv3x3,increase,shortcut}.{conv,bn}`
  for torchvision's `conv1/bn1`, `layer{1..4}.{n-1}.{conv1,conv2,conv3,downsample}`;
* the stride of a downsampling block on its first 1x1 ("reduce") conv, not on the 3x3
  (`to_caffe_strides` moves it; with output stride 8 only layer2's first block is affected);
* input in BGR order, mean (104.008, 116.669, 122.675) subtracted on the 0..255 scale, no std.

The BGR order is folded into the weights: the stem conv's input channels are reversed at load, so
the network takes RGB; `CAFFE_INPUT` is the (mean, std) that makes `transforms.normalize` give
x_rgb - mean_rgb on the 0..255 scale. The forward pass is then the reference's on the BGR image
(tests/unit/test_advcam.py checks it against a functional caffe ResNet).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.resnet import Bottleneck

from recam.errors import RecamInputError

log = logging.getLogger(__name__)

CAFFE_BGR_MEAN = (104.008, 116.669, 122.675)
# For transforms.normalize ((x / 255 - mean) / std): RGB mean on the 0..1 scale, std 1/255.
CAFFE_INPUT = {"mean": [m / 255.0 for m in CAFFE_BGR_MEAN[::-1]], "std": [1.0 / 255.0] * 3}
HEAD_PREFIXES = ("aspp.", "fc.")  # random in the reference too (non-strict load): never loaded
PREFIX = "advcam:"
DOWNLOAD_HINT = (
    "download deeplabv1_resnet101-imagenet.pth (the ImageNet DeepLab init linked from the AdvCAM and "
    "ReCAM READMEs, 'DeepLab' step) and give its path as seg.pretrained=advcam:<path>"
)
_BN = ("weight", "bias", "running_mean", "running_var")


def to_caffe_strides(resnet_layers: list[nn.Sequential]) -> None:
    """Move each downsampling Bottleneck's stride from its 3x3 conv (torchvision v1.5) to its first
    1x1 conv (caffe / MSRA v1), in place. The shortcut keeps its stride; output sizes are the same
    for the even sizes inside a ResNet, and ceil-rounded alike for odd ones."""
    for layer in resnet_layers:
        for block in layer:
            if not isinstance(block, Bottleneck):
                raise RecamInputError(
                    "recam: the caffe layout (seg.pretrained=advcam:...) needs a Bottleneck ResNet "
                    "(seg.arch=deeplabv2_resnet101)"
                )
            if block.conv2.stride != (1, 1):
                block.conv1.stride, block.conv2.stride = block.conv2.stride, (1, 1)


def advcam_key_map(backbone: nn.Module) -> dict[str, str]:
    """{our backbone key: the deeplab-pytorch key} for every parameter and BN buffer of `backbone`
    (torchvision names: conv1, bn1, layer1..layer4), `num_batches_tracked` excepted."""
    mapping = {"conv1.weight": "layer1.conv1.conv.weight", **{f"bn1.{k}": f"layer1.conv1.bn.{k}" for k in _BN}}
    parts = {"conv1": "reduce", "conv2": "conv3x3", "conv3": "increase"}
    for index in range(1, 5):
        for n, block in enumerate(getattr(backbone, f"layer{index}")):
            theirs = f"layer{index + 1}.block{n + 1}"
            ours = f"layer{index}.{n}"
            for conv, name in parts.items():
                mapping[f"{ours}.{conv}.weight"] = f"{theirs}.{name}.conv.weight"
                bn = f"bn{conv[-1]}"
                mapping.update({f"{ours}.{bn}.{k}": f"{theirs}.{name}.bn.{k}" for k in _BN})
            if block.downsample is not None:
                mapping[f"{ours}.downsample.0.weight"] = f"{theirs}.shortcut.conv.weight"
                mapping.update({f"{ours}.downsample.1.{k}": f"{theirs}.shortcut.bn.{k}" for k in _BN})
    return mapping


def _strip(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Drop DataParallel's `module.` and deeplab-pytorch MSC's `base.` prefixes."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "base."):
            key = key.removeprefix(prefix)
        out[key] = value
    return out


def convert_advcam_state(state: dict[str, Tensor], backbone: nn.Module, source: str) -> dict[str, Tensor]:
    """The caffe-layout state dict as our backbone's state dict (strict: every backbone key must be
    there with its shape; keys other than the head's are an error). The stem conv's input channels
    are reversed (BGR -> RGB)."""
    state = _strip(state)
    mapping = advcam_key_map(backbone)
    ours = backbone.state_dict()
    missing = [theirs for theirs in mapping.values() if theirs not in state]
    unexpected = [
        k
        for k in state
        if k not in set(mapping.values()) and not k.startswith(HEAD_PREFIXES) and not k.endswith("num_batches_tracked")
    ]
    if missing or unexpected:
        raise RecamInputError(
            f"recam: {source} is not the caffe-layout ResNet of seg.arch: {len(missing)} keys missing "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]}) - "
            f"{DOWNLOAD_HINT}"
        )
    converted = {}
    for key, theirs in mapping.items():
        value = state[theirs]
        if tuple(value.shape) != tuple(ours[key].shape):
            raise RecamInputError(
                f"recam: {source} has {theirs} of shape {tuple(value.shape)}, the model expects "
                f"{tuple(ours[key].shape)} ({key}) - use seg.arch=deeplabv2_resnet101"
            )
        converted[key] = value.to(ours[key].dtype)
    converted["conv1.weight"] = converted["conv1.weight"].flip(1)  # BGR input -> RGB input
    for key, value in ours.items():
        if key.endswith("num_batches_tracked"):
            converted[key] = value
    heads = sum(1 for k in state if k.startswith(HEAD_PREFIXES))
    log.info(
        "advcam: loaded %d backbone tensors from %s; %d head tensors left out (ASPP starts random, as in "
        "the reference)",
        len(mapping),
        source,
        heads,
    )
    return converted


def load_advcam(backbone: nn.Module, pretrained: str) -> None:
    """Load `advcam:<path>` into `backbone` (already in the caffe stride layout), strictly."""
    path = Path(pretrained.removeprefix(PREFIX))
    if not path.is_file():
        raise RecamInputError(f"recam: seg.pretrained={pretrained}: {path} does not exist - {DOWNLOAD_HINT}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # not a torch file, truncated download, pickled objects
        raise RecamInputError(f"recam: {path} cannot be read as a state dict ({err}) - {DOWNLOAD_HINT}") from err
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    backbone.load_state_dict(convert_advcam_state(state, backbone, str(path)), strict=True)

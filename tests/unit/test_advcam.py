"""The published DeepLab hand-off: AdvCAM's caffe-layout ResNet-101 file (key mapping, strides, BGR
mean-subtracted input) against a functional caffe ResNet; the reference CRF image; balanced CE."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from recam.data.transforms import normalize, to_chw
from recam.errors import RecamInputError
from recam.models.advcam import CAFFE_BGR_MEAN, CAFFE_INPUT
from recam.models.deeplab import build_deeplabv2, build_seg_model
from recam.seg.inference import reference_crf_image
from recam.seg.losses import balanced_cross_entropy, cross_entropy_ignore, msc_loss
from recam.stages.seg import input_norm

BLOCKS = (3, 4, 23, 3)  # ResNet-101


def fake_caffe_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict named as deeplab-pytorch's caffe ResNet-101 (+ a DeepLab-v1 `fc` head)."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}

    def conv_bn(name: str, out: int, inp: int, k: int) -> None:
        state[f"{name}.conv.weight"] = torch.randn(out, inp, k, k, generator=g) * (1.0 / (inp * k * k)) ** 0.5
        state[f"{name}.bn.weight"] = 0.5 + torch.rand(out, generator=g)
        state[f"{name}.bn.bias"] = 0.1 * torch.randn(out, generator=g)
        state[f"{name}.bn.running_mean"] = 0.1 * torch.randn(out, generator=g)
        state[f"{name}.bn.running_var"] = 0.5 + torch.rand(out, generator=g)

    conv_bn("layer1.conv1", 64, 3, 7)
    inp = 64
    for index, (count, mid) in enumerate(zip(BLOCKS, (64, 128, 256, 512))):
        out = 4 * mid
        for n in range(count):
            name = f"layer{index + 2}.block{n + 1}"
            conv_bn(f"{name}.reduce", mid, inp if n == 0 else out, 1)
            conv_bn(f"{name}.conv3x3", mid, mid, 3)
            conv_bn(f"{name}.increase", out, mid, 1)
            if n == 0:
                conv_bn(f"{name}.shortcut", out, inp, 1)
        inp = out
    state["fc.weight"], state["fc.bias"] = torch.zeros(21, 2048, 3, 3), torch.zeros(21)
    return state


def caffe_forward(x_bgr: torch.Tensor, state: dict[str, torch.Tensor]) -> torch.Tensor:
    """deeplab-pytorch's ResNet at output stride 8, written out: stride on `reduce`, dilations 1/1/2/4."""

    def cbr(x, name, stride=1, padding=0, dilation=1, relu=True):
        x = F.conv2d(x, state[f"{name}.conv.weight"], stride=stride, padding=padding, dilation=dilation)
        x = F.batch_norm(
            x,
            state[f"{name}.bn.running_mean"],
            state[f"{name}.bn.running_var"],
            state[f"{name}.bn.weight"],
            state[f"{name}.bn.bias"],
            training=False,
            eps=1e-5,
        )
        return F.relu(x) if relu else x

    x = F.max_pool2d(cbr(x_bgr, "layer1.conv1", stride=2, padding=3), 3, 2, 1, ceil_mode=True)
    for index, (count, stride, dilation) in enumerate(zip(BLOCKS, (1, 2, 1, 1), (1, 1, 2, 4))):
        for n in range(count):
            name, step = f"layer{index + 2}.block{n + 1}", stride if n == 0 else 1
            h = cbr(cbr(x, f"{name}.reduce", stride=step), f"{name}.conv3x3", padding=dilation, dilation=dilation)
            h = cbr(h, f"{name}.increase", relu=False)
            x = F.relu(h + (cbr(x, f"{name}.shortcut", stride=step, relu=False) if n == 0 else x))
    return x


@pytest.fixture(scope="module")
def advcam_file(tmp_path_factory) -> tuple[Path, dict[str, torch.Tensor]]:
    state = fake_caffe_state()
    path = tmp_path_factory.mktemp("advcam") / "deeplabv1_resnet101-imagenet.pth"
    torch.save({f"base.{k}": v for k, v in state.items()}, path)  # deeplab-pytorch MSC's base. prefix
    return path, state


def test_advcam_file_gives_the_caffe_forward_on_rgb_input(advcam_file) -> None:
    path, state = advcam_file
    torch.manual_seed(0)
    model = build_deeplabv2(arch="resnet101", num_classes=3, pretrained=f"advcam:{path}").eval()
    assert model.backbone.layer2[0].conv1.stride == (2, 2) and model.backbone.layer2[0].conv2.stride == (1, 1)
    image = np.random.default_rng(0).integers(0, 256, (35, 37, 3), dtype=np.uint8)  # odd sizes: ceil rounding
    x_rgb = torch.from_numpy(to_chw(normalize(image, CAFFE_INPUT["mean"], CAFFE_INPUT["std"])))[None]
    x_bgr = torch.from_numpy(
        np.ascontiguousarray(
            (image[..., ::-1].astype(np.float32) - np.asarray(CAFFE_BGR_MEAN, np.float32)).transpose(2, 0, 1)
        )
    )[None]
    with torch.no_grad():
        ours, reference = model.backbone(x_rgb), caffe_forward(x_bgr, state)
    assert ours.shape == reference.shape == (1, 2048, 5, 5)
    assert ((ours - reference).abs().max() / reference.abs().max()).item() < 1e-4
    # the torchvision layout of the same weights is another network: the stride placement matters
    plain = build_deeplabv2(arch="resnet101", num_classes=3).eval()
    plain.backbone.load_state_dict(model.backbone.state_dict())
    with torch.no_grad():
        assert ((plain.backbone(x_rgb) - reference).abs().max() / reference.abs().max()).item() > 1e-2


def test_advcam_checkpoint_round_trip_keeps_the_layout(advcam_file) -> None:
    path, _ = advcam_file
    config = {"name": "deeplabv2_resnet101", "num_classes": 3, "msc_scales": [], "layout": "caffe"}
    built = build_seg_model(**config, pretrained=f"advcam:{path}")
    again = build_seg_model(**config, pretrained="none")
    again.load_state_dict(built.state_dict(), strict=True)
    assert again.base.backbone.layer3[0].conv1.stride == (1, 1)  # output stride 8: layer3 is dilated
    assert again.base.backbone.layer2[0].conv1.stride == (2, 2)
    assert input_norm(config, [0.5] * 3, [0.2] * 3) == (CAFFE_INPUT["mean"], CAFFE_INPUT["std"])
    assert input_norm({**config, "layout": "torchvision"}, [0.5] * 3, [0.2] * 3) == ([0.5] * 3, [0.2] * 3)


def test_missing_or_foreign_advcam_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RecamInputError, match="does not exist - download deeplabv1_resnet101-imagenet.pth") as err:
        build_deeplabv2(arch="resnet101", pretrained=f"advcam:{tmp_path / 'nope.pth'}")
    assert "\n" not in str(err.value)
    torch.save({"conv1.weight": torch.zeros(64, 3, 7, 7)}, tmp_path / "torchvision.pth")
    with pytest.raises(RecamInputError, match="not the caffe-layout ResNet"):
        build_deeplabv2(arch="resnet101", pretrained=f"advcam:{tmp_path / 'torchvision.pth'}")
    with pytest.raises(RecamInputError, match="deeplabv2_resnet101"):
        build_deeplabv2(arch="resnet18", pretrained=f"advcam:{tmp_path / 'torchvision.pth'}")


def test_reference_crf_image_is_the_wrapped_mean_subtracted_bgr() -> None:
    image = np.array([[[100, 200, 0]]], dtype=np.uint8)  # RGB
    # BGR (0, 200, 100) - (104.008, 116.669, 122.675) = (-104.008, 83.331, -22.675) -> (-104, 83, -22) mod 256
    np.testing.assert_array_equal(reference_crf_image(image), [[[152, 83, 234]]])


def test_balanced_cross_entropy_known_answer() -> None:
    logits = torch.zeros(1, 3, 1, 4)
    logits[0, 0, 0, :] = torch.tensor([2.0, 0.0, 0.0, 5.0])
    labels = torch.tensor([[[0, 0, 0, 2]]])
    per_pixel = F.cross_entropy(logits, labels, reduction="none")[0, 0]
    expected = (per_pixel[:3].mean() + per_pixel[3]) / 2
    assert torch.isclose(balanced_cross_entropy(logits, labels), expected)
    assert not torch.isclose(cross_entropy_ignore(logits, labels), expected)
    ignored = torch.tensor([[[0, 255, 0, 255]]])  # no foreground pixel: the bg mean / 2
    assert torch.isclose(balanced_cross_entropy(logits, ignored), per_pixel[[0, 2]].mean() / 2)
    assert torch.isclose(msc_loss([logits, logits], labels, balanced=True), 2 * expected)

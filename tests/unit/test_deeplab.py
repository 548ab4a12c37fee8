"""DeepLab models: output sizes and strides, dilations, ASPP, MSC outputs, lr groups, weights."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from recam.errors import RecamInputError
from recam.models.backbone import FixedBatchNorm2d
from recam.models.deeplab import ASPP, MSC, build_deeplabv2, build_seg_model, head_of, seg_param_groups


def caffe_logit_size(size: int, output_stride: int) -> int:
    """Logit rows of deeplabv2 for `size` input rows: conv1 (7x7 s2 p3), ceil-mode 3x3 s2 p1
    max-pool, layer2 stride 2, and layer3 stride 2 at output stride 16."""
    size = (size - 1) // 2 + 1
    size = math.ceil((size - 1) / 2) + 1
    size = (size - 1) // 2 + 1
    return size if output_stride == 8 else (size - 1) // 2 + 1


@pytest.mark.parametrize("output_stride", [8, 16])
def test_deeplabv2_output_stride(output_stride: int) -> None:
    torch.manual_seed(0)
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=5, output_stride=output_stride, msc_scales=[])
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 80))
    assert out.shape == (2, 5, caffe_logit_size(64, output_stride), caffe_logit_size(80, output_stride))
    assert caffe_logit_size(64, output_stride) == (9 if output_stride == 8 else 5)


def test_dilations_follow_deeplab_pytorch() -> None:
    """Output stride 8: every 3x3 conv of layer3 has dilation 2 and of layer4 dilation 4 (first
    blocks included, unlike torchvision's replace_stride_with_dilation); no strides left there."""
    net = build_deeplabv2(arch="resnet50", num_classes=3)
    for layer, dilation in ((net.backbone.layer3, 2), (net.backbone.layer4, 4)):
        for block in layer:
            assert block.conv2.dilation == (dilation, dilation) and block.conv2.padding == (dilation, dilation)
            assert block.conv2.stride == (1, 1) and block.conv1.kernel_size == (1, 1)
        assert layer[0].downsample[0].stride == (1, 1)
    assert net.backbone.layer2[0].conv2.stride == (2, 2) and net.backbone.maxpool.ceil_mode


def test_resnet101_gives_the_spec_sizes_for_a_321_crop() -> None:
    """The spec's network on the meta device (shapes only, no memory or compute): ResNet-101 blocks
    (3, 4, 23, 3), 2048 channels into ASPP, and 41x41 logits for a 321 crop, 21x21 / 31x31 for its
    0.5 / 0.75 copies, then the 41x41 max (spec §7.1)."""
    with torch.device("meta"):
        model = build_seg_model(name="deeplabv2_resnet101", num_classes=21)
        outputs = model.train()(torch.empty(1, 3, 321, 321))
    backbone = model.base.backbone
    assert [len(layer) for layer in (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)] == [
        3,
        4,
        23,
        3,
    ]
    assert all(conv.in_channels == 2048 for conv in model.base.aspp.convs)
    assert [tuple(o.shape) for o in outputs] == [(1, 21, 41, 41), (1, 21, 21, 21), (1, 21, 31, 31), (1, 21, 41, 41)]


def test_aspp_sums_four_dilated_convs_with_the_reference_init() -> None:
    torch.manual_seed(0)
    aspp = ASPP(64, 7)
    assert [c.dilation[0] for c in aspp.convs] == [6, 12, 18, 24] == [c.padding[0] for c in aspp.convs]
    weights = torch.cat([c.weight.flatten() for c in aspp.convs])
    assert abs(weights.std().item() - 0.01) < 0.001 and abs(weights.mean().item()) < 0.001
    assert all(torch.all(c.bias == 0) for c in aspp.convs)
    x = torch.randn(1, 64, 9, 9)
    expected = sum(
        nn.functional.conv2d(x, c.weight, c.bias, padding=c.padding, dilation=c.dilation) for c in aspp.convs
    )
    torch.testing.assert_close(aspp(x), expected)


def test_msc_returns_four_maps_in_training_and_their_max_in_eval() -> None:
    torch.manual_seed(0)
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=4, fixed_bn=True)  # same forward in both modes
    x = torch.randn(1, 3, 97, 97)
    with torch.no_grad():
        full, half, three_quarters, fused = model.train()(x)
        evaluated = model.eval()(x)
        base = model.base(x)
    torch.testing.assert_close(full, base)
    assert half.shape[-1] < three_quarters.shape[-1] < full.shape[-1]
    up = [
        nn.functional.interpolate(m, size=full.shape[-2:], mode="bilinear", align_corners=False)
        for m in (half, three_quarters)
    ]
    torch.testing.assert_close(fused, torch.maximum(full, torch.maximum(*up)))
    torch.testing.assert_close(evaluated, fused)


def test_deeplabv3_returns_input_size_logits_without_aux() -> None:
    torch.manual_seed(0)
    model = build_seg_model(name="deeplabv3_resnet50", num_classes=6, msc_scales=[])
    assert not hasattr(model.base, "aux_classifier")
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 40, 56))
    assert out.shape == (2, 6, 40, 56)
    assert not any(isinstance(m, nn.BatchNorm2d) and not isinstance(m, FixedBatchNorm2d) for m in model.modules())


def test_lr_groups_leave_fixed_bn_out_and_scale_the_head() -> None:
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=3, fixed_bn=True)
    groups = {g["name"]: g for g in seg_param_groups(model, lr=2.5e-4, weight_decay=5e-4)}
    assert set(groups) == {"backbone", "head_weight", "head_bias"}
    assert (groups["backbone"]["lr"], groups["backbone"]["weight_decay"]) == (2.5e-4, 5e-4)
    assert groups["head_weight"]["lr"] == pytest.approx(2.5e-3) and groups["head_weight"]["weight_decay"] == 5e-4
    assert groups["head_bias"]["lr"] == pytest.approx(5e-3) and groups["head_bias"]["weight_decay"] == 0.0
    head = head_of(model)
    assert {id(p) for p in groups["head_weight"]["params"]} == {id(c.weight) for c in head.convs}
    assert {id(p) for p in groups["head_bias"]["params"]} == {id(c.bias) for c in head.convs}
    grouped = {id(p) for g in groups.values() for p in g["params"]}
    bn_params = {id(p) for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters(recurse=False)}
    assert bn_params and not grouped & bn_params
    assert all(not p.requires_grad for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    convs = {id(m.weight) for m in model.base.backbone.modules() if isinstance(m, nn.Conv2d)}
    assert {id(p) for p in groups["backbone"]["params"]} == convs


def test_trainable_bn_gets_its_own_group_without_weight_decay() -> None:
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=3, fixed_bn=False)
    groups = {g["name"]: g for g in seg_param_groups(model, lr=0.01, weight_decay=5e-4)}
    assert groups["bn"]["weight_decay"] == 0.0 and groups["bn"]["lr"] == 0.01
    n_params = sum(1 for _ in model.parameters())
    assert sum(len(g["params"]) for g in groups.values()) == n_params


def test_backbone_weights_load_from_a_torchvision_state_dict(tmp_path) -> None:
    torch.manual_seed(1)
    reference = resnet18()
    torch.save(reference.state_dict(), tmp_path / "r18.pth")
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=3, pretrained=str(tmp_path / "r18.pth"))
    torch.testing.assert_close(model.base.backbone.layer3[1].conv2.weight, reference.layer3[1].conv2.weight)


def test_missing_imagenet_weights_say_what_to_download(tmp_path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(RecamInputError, match=r"download https://download.pytorch.org/models/resnet101-.*\.pth"):
        build_seg_model(name="deeplabv2_resnet101", num_classes=21, pretrained="imagenet")


@pytest.mark.parametrize("name, message", [("deeplabv4_resnet18", "seg.arch"), ("deeplabv3_resnet18", "resnet50")])
def test_unknown_architectures_fail_with_one_line(name: str, message: str) -> None:
    with pytest.raises(RecamInputError, match=message):
        build_seg_model(name=name, num_classes=3)


def test_msc_without_scales_is_the_base_network() -> None:
    model = build_seg_model(name="deeplabv2_resnet18", num_classes=3, msc_scales=[])
    assert isinstance(model, MSC) and model.scales == ()
    model.train()
    with torch.no_grad():
        outputs = model(torch.randn(1, 3, 48, 48))
    assert isinstance(outputs, list) and len(outputs) == 1

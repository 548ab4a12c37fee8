"""Backbone and CAM network: output stride, fixed BN, freezing, weight loading, param groups."""

from __future__ import annotations

import urllib.error
from pathlib import Path

import pytest
import torch
import torchvision.models as tvm
from torch import nn

from recam.errors import RecamInputError
from recam.models.backbone import (
    IMAGENET_WEIGHTS,
    FixedBatchNorm2d,
    build_backbone,
    build_resnet,
    freeze_bn_stats,
)
from recam.models.cam_net import CamNet, build_cam_net


def _image(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in module.named_buffers()}


def _randomise_bn_stats(module: nn.Module, seed: int = 0) -> None:
    """Non-trivial running stats, so "uses running stats" differs visibly from "uses batch stats"."""
    g = torch.Generator().manual_seed(seed)
    for bn in module.modules():
        if isinstance(bn, nn.BatchNorm2d):
            bn.running_mean.copy_(0.1 * torch.randn(bn.num_features, generator=g))
            bn.running_var.copy_(0.5 + torch.rand(bn.num_features, generator=g))


# ---------------------------------------------------------------- output stride


@pytest.mark.parametrize("arch, channels", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("output_stride, size", [(16, (5, 6)), (8, (9, 11))])
def test_feature_size_rounds_up(arch, channels, output_stride, size):
    backbone = build_backbone(arch=arch, output_stride=output_stride).eval()
    x = _image(1, 3, 65, 81)  # odd sizes: ceil(65/16) = 5, ceil(81/16) = 6; /8: 9, 11
    with torch.no_grad():
        stages = backbone.forward_stages(x)
        features = backbone(x)
    assert backbone.out_channels == channels
    assert features.shape == (1, channels, *size)
    assert torch.equal(features, stages["stage4"])
    assert stages["stem"].shape[-2:] == stages["stage1"].shape[-2:] == (17, 21)
    assert stages["stage2"].shape[-2:] == (9, 11)
    assert stages["stage3"].shape[-2:] == size


def _dilations(layer: nn.Sequential) -> list[tuple[int, int]]:
    return [block.conv2.dilation for block in layer]


def test_stride16_removes_layer4_stride_without_dilation():
    resnet = build_resnet(arch="resnet50", output_stride=16)
    first = resnet.layer4[0]
    assert first.conv2.stride == (1, 1) and first.downsample[0].stride == (1, 1)
    assert resnet.layer3[0].conv2.stride == (2, 2)
    assert all(m.dilation == (1, 1) for m in resnet.modules() if isinstance(m, nn.Conv2d))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_stride8_dilates_all_but_first_block_by_two(arch):
    resnet = build_resnet(arch=arch, output_stride=8)
    for layer in (resnet.layer3, resnet.layer4):
        first = layer[0]
        strided = first.conv2 if arch == "resnet50" else first.conv1
        assert strided.stride == (1, 1) and first.downsample[0].stride == (1, 1)
        # The reference's quirk: the first block keeps dilation 1, and layer4 uses 2, not 4.
        assert _dilations(layer) == [(1, 1)] + [(2, 2)] * (len(layer) - 1)
        assert all(block.conv2.padding == block.conv2.dilation for block in layer)
    assert _dilations(resnet.layer2) == [(1, 1)] * len(resnet.layer2)


def test_stride8_layer3_equals_torchvision_dilated_layer3():
    """For layer3, torchvision's dilation layout (first block 1, then 2) is the reference's: same
    weights, same stage-3 output. (Its layer4 would use 2 then 4, so it is not used.)"""
    ours = build_backbone(arch="resnet50", output_stride=8).eval()
    theirs = tvm.resnet50(weights=None, norm_layer=FixedBatchNorm2d, replace_stride_with_dilation=[False, True, False])
    theirs.fc = nn.Identity()
    theirs.load_state_dict(ours.state_dict())
    x = _image(1, 3, 64, 64)
    with torch.no_grad():
        expected = theirs.layer3(theirs.layer2(theirs.layer1(theirs.maxpool(theirs.relu(theirs.bn1(theirs.conv1(x)))))))
        got = ours.forward_stages(x)["stage3"]
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ---------------------------------------------------------------- BatchNorm


def test_fixed_bn_uses_running_stats_in_train_mode_and_never_updates_them():
    model = build_cam_net(arch="resnet18", num_classes=3)
    _randomise_bn_stats(model)
    x = _image(2, 3, 64, 64)
    before = _buffers(model)
    model.eval()
    with torch.no_grad():
        eval_logits = model(x)["logits"]
    model.train()
    out = model(x)
    torch.testing.assert_close(out["logits"], eval_logits, rtol=0, atol=0)
    out["logits"].sum().backward()
    torch.optim.SGD(model.param_groups(lr=0.1, head_lr_mult=10.0, weight_decay=1e-4), lr=0.1).step()
    after = _buffers(model)
    assert after.keys() == before.keys()
    for key in before:
        assert torch.equal(after[key], before[key]), key
    bn = model.backbone.layer1[0].bn1
    assert isinstance(bn, FixedBatchNorm2d)
    assert bn.weight.grad is not None and bn.bias.grad is not None  # gamma/beta still train


def test_fixed_bn_matches_reference_formula():
    bn = FixedBatchNorm2d(4).train()
    _randomise_bn_stats(bn)
    with torch.no_grad():
        bn.weight.copy_(torch.tensor([1.0, 2.0, 0.5, -1.0]))
        bn.bias.copy_(torch.tensor([0.0, 0.1, -0.2, 0.3]))
    x = _image(3, 4, 5, 5)
    shape = (1, 4, 1, 1)
    expected = (x - bn.running_mean.view(shape)) / torch.sqrt(bn.running_var.view(shape) + 1e-5)
    expected = expected * bn.weight.view(shape) + bn.bias.view(shape)
    torch.testing.assert_close(bn(x), expected, rtol=1e-6, atol=1e-6)
    assert bn.eps == 1e-5


def test_trainable_bn_updates_running_stats_except_in_frozen_modules():
    backbone = build_backbone(arch="resnet18", fixed_bn=False).train()
    assert not any(isinstance(m, FixedBatchNorm2d) for m in backbone.modules())
    before = _buffers(backbone)
    backbone(_image(2, 3, 64, 64))
    after = _buffers(backbone)
    assert not torch.equal(after["layer1.0.bn1.running_mean"], before["layer1.0.bn1.running_mean"])
    assert int(after["layer1.0.bn1.num_batches_tracked"]) == 1
    # bn1 is frozen (freeze_upto=conv1): kept in eval mode, its statistics do not move either.
    assert torch.equal(after["bn1.running_mean"], before["bn1.running_mean"])


def test_freeze_bn_stats_converts_in_place_and_keeps_keys():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Sequential(nn.BatchNorm2d(4)))
    _randomise_bn_stats(model)
    keys, weight = list(model.state_dict()), model[1].weight
    converted = freeze_bn_stats(model)
    assert converted is model
    assert isinstance(model[1], FixedBatchNorm2d) and isinstance(model[3][0], FixedBatchNorm2d)
    assert list(model.state_dict()) == keys
    assert model[1].weight is weight  # shared, so an existing optimizer still holds it
    x = _image(2, 3, 8, 8)
    train_out = model.train()(x)
    with torch.no_grad():
        torch.testing.assert_close(train_out, model.eval()(x), rtol=0, atol=0)


# ---------------------------------------------------------------- freezing


def test_conv1_frozen_gets_no_grad_and_stays_frozen_after_train():
    model = build_cam_net(arch="resnet18", num_classes=3).train()
    model(_image(1, 3, 64, 64))["logits"].sum().backward()
    backbone = model.backbone
    for p in [*backbone.conv1.parameters(), *backbone.bn1.parameters()]:
        assert not p.requires_grad and p.grad is None
    assert backbone.layer1[0].conv1.weight.grad is not None
    assert model.classifier.weight.grad is not None
    backbone.conv1.weight.requires_grad_(True)
    model.train()  # re-applies the freeze, as the reference's train() override does
    assert not backbone.conv1.weight.requires_grad
    assert all(p.requires_grad for p in backbone.layer1.parameters())


def test_freeze_upto_layer2_freezes_layer1_layer2_and_detaches():
    model = build_cam_net(arch="resnet18", num_classes=3, freeze_upto="layer2").train()
    backbone = model.backbone
    frozen = [
        *backbone.conv1.parameters(),
        *backbone.bn1.parameters(),
        *backbone.layer1.parameters(),
        *backbone.layer2.parameters(),
    ]
    assert frozen and not any(p.requires_grad for p in frozen)
    stages = backbone.forward_stages(_image(1, 3, 64, 64))
    assert not stages["stage2"].requires_grad and stages["stage3"].requires_grad
    model(_image(1, 3, 64, 64))["logits"].sum().backward()
    assert all(p.grad is None for p in frozen)
    assert all(p.grad is not None for p in backbone.layer3.parameters())
    backbone.freeze("none")
    assert all(p.requires_grad for p in backbone.parameters())


# ---------------------------------------------------------------- weights


def _save(obj: object, path: Path) -> str:
    torch.save(obj, path)
    return str(path)


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def test_state_dict_path_round_trip(tmp_path):
    source = build_backbone(arch="resnet18")
    _randomise_bn_stats(source)
    path = _save(source.state_dict(), tmp_path / "backbone.pth")
    loaded = build_backbone(arch="resnet18", pretrained=path)
    _assert_same_weights(source, loaded)
    x = _image(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), source.eval()(x), rtol=0, atol=0)


def test_state_dict_wrappers_prefix_fc_and_missing_counters(tmp_path):
    source = tvm.resnet18(weights=None)  # torchvision layout, fc.* included
    state = source.state_dict()
    wrapped = {"model": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}
    legacy = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # pre-0.4 files
    for name, obj in [("wrapped", wrapped), ("state_dict", {"state_dict": state}), ("legacy", legacy)]:
        loaded = build_backbone(arch="resnet18", pretrained=_save(obj, tmp_path / f"{name}.pth"))
        for key, value in loaded.state_dict().items():
            assert torch.equal(value, state[key]), (name, key)


def test_mismatched_state_dict_lists_keys(tmp_path):
    state = build_backbone(arch="resnet18").state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    state["bn1.weight"] = torch.zeros(7)
    path = _save(state, tmp_path / "bad.pth")
    with pytest.raises(RecamInputError) as err:
        build_backbone(arch="resnet18", pretrained=path)
    message = str(err.value)
    assert "\n" not in message and message.startswith("recam: ")
    for fragment in (
        "missing keys [layer1.0.conv1.weight]",
        "unexpected keys [extra.weight]",
        "bn1.weight (7,) vs (64,)",
        path,
    ):
        assert fragment in message


def test_wrong_architecture_checkpoint_is_refused(tmp_path):
    path = _save(tvm.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    with pytest.raises(RecamInputError, match=r"does not fit the resnet34 backbone: missing keys \[layer1.2"):
        build_backbone(arch="resnet34", pretrained=path)


def test_missing_or_unreadable_path(tmp_path):
    with pytest.raises(RecamInputError, match="is not a file"):
        build_backbone(arch="resnet18", pretrained=str(tmp_path / "absent.pth"))
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(RecamInputError, match="cannot read a state_dict"):
        build_backbone(arch="resnet18", pretrained=str(junk))


def _no_network(*args, **kwargs):
    raise urllib.error.URLError("network disabled in tests")


def test_imagenet_without_file_or_network_says_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    url = IMAGENET_WEIGHTS["resnet18"].url
    with pytest.raises(RecamInputError) as err:
        build_backbone(arch="resnet18", pretrained="imagenet")
    message = str(err.value)
    expected_path = tmp_path / "hub" / "checkpoints" / url.rsplit("/", 1)[-1]
    assert "\n" not in message
    assert message.startswith(f"recam: ImageNet weights for resnet18 not found at {expected_path}")
    assert f"download {url} and put it there" in message and "model.pretrained=none" in message


def test_imagenet_reads_the_hub_cache_without_downloading(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", _no_network)
    cached = tvm.resnet18(weights=None).state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(cached, checkpoints / IMAGENET_WEIGHTS["resnet18"].url.rsplit("/", 1)[-1])
    loaded = build_backbone(arch="resnet18", pretrained="imagenet")
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, cached[key]), key


# ---------------------------------------------------------------- CamNet


def test_camnet_keys_and_head():
    model = build_cam_net(arch="resnet18", num_classes=5)
    keys = list(model.state_dict())
    assert keys[0] == "backbone.conv1.weight" and keys[-1] == "classifier.weight"
    assert "backbone.layer4.1.bn2.num_batches_tracked" in keys
    assert not any(k.startswith(("fc.", "backbone.fc.")) for k in keys)
    assert model.classifier.weight.shape == (5, 512, 1, 1) and model.classifier.bias is None
    assert model.num_classes == 5


def test_logits_class_maps_and_cams():
    model = build_cam_net(arch="resnet18", num_classes=4).double().eval()
    x = _image(2, 3, 64, 64).double()
    with torch.no_grad():
        out = model(x)
        maps = model.class_maps(out["features"])
        # Spec §2.3: the logits are the spatial mean of the pre-ReLU class maps.
        torch.testing.assert_close(out["logits"], maps.mean(dim=(2, 3)), rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.cams(x), torch.relu(maps), rtol=0, atol=0)
        # A given (K, C) weight, e.g. ReCAM's W ⊙ V: the same 1x1 conv, per pixel.
        other = _image(4, model.backbone.out_channels, seed=1).double()
        expected = torch.einsum("kc,bchw->bkhw", other, out["features"])
        torch.testing.assert_close(model.class_maps(out["features"], other), expected, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model.class_maps(out["features"], other[:, :, None, None]), expected)
    assert out["logits"].shape == (2, 4) and out["features"].shape == (2, 512, 4, 4)


def test_param_groups_cover_exactly_the_trainable_parameters():
    for freeze_upto in ("conv1", "layer2", "none"):
        model = build_cam_net(arch="resnet18", num_classes=3, freeze_upto=freeze_upto)
        groups = model.param_groups(lr=0.1, head_lr_mult=10.0, weight_decay=1e-4)
        assert [g["name"] for g in groups] == ["backbone", "classifier"]
        assert [g["lr"] for g in groups] == [0.1, pytest.approx(1.0)]
        assert all(g["weight_decay"] == 1e-4 for g in groups)
        ids = [id(p) for g in groups for p in g["params"]]
        assert len(ids) == len(set(ids))
        assert set(ids) == {id(p) for p in model.parameters() if p.requires_grad}
        assert [id(p) for p in groups[1]["params"]] == [id(model.classifier.weight)]
        torch.optim.SGD(groups, lr=0.1, momentum=1e-4, weight_decay=1e-4)  # SGD accepts them as they are
        frozen = {id(p) for p in (*model.backbone.conv1.parameters(), *model.backbone.bn1.parameters())}
        assert frozen.isdisjoint(ids) == (freeze_upto != "none")


def test_bad_choices_raise_input_errors():
    with pytest.raises(RecamInputError, match="model.arch=resnet9"):
        build_cam_net(arch="resnet9")
    with pytest.raises(RecamInputError, match="model.output_stride=32"):
        build_cam_net(arch="resnet18", output_stride=32)
    with pytest.raises(RecamInputError, match="model.freeze_upto=layer3"):
        build_cam_net(arch="resnet18", freeze_upto="layer3")


def test_channels_last_gives_the_same_logits():
    model = build_cam_net(arch="resnet18", num_classes=3).eval()
    x = _image(1, 3, 64, 64)
    with torch.no_grad():
        expected = model(x)["logits"]
        got = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))["logits"]
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_camnet_wraps_any_backbone():
    backbone = build_backbone(arch="resnet18", output_stride=8)
    model = CamNet(backbone, num_classes=2)
    assert model(_image(1, 3, 64, 64))["features"].shape == (1, 512, 8, 8)

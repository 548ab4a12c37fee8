"""IRNet shapes, freezing, mean shift, parameter groups, key conversion; IRN loss sanity checks.

ResNet-18 keeps these fast; the ResNet-50 layout and values are the golden test's job.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.masks.affinity import affinity_labels
from recam.masks.irn_losses import irn_losses, mean_displacement, pair_displacement
from recam.masks.path_index import build_path_index
from recam.models.irn import DP_LR_MULT, IRNet, build_irn, convert_reference_state_dict, stride4_size


@pytest.fixture
def irn() -> IRNet:
    torch.manual_seed(0)
    return build_irn(arch="resnet18", pretrained="none")


@pytest.mark.parametrize("size", [(64, 80), (65, 83), (37, 45)])
def test_outputs_are_at_stride_4(irn, size):
    height, width = size
    h4, w4 = stride4_size(height, width)
    assert (h4, w4) == (-(-height // 4), -(-width // 4))
    with torch.no_grad():
        out = irn.eval()(torch.randn(2, 3, height, width))
        inferred = irn.infer_edge_dp(torch.randn(1, 3, height, width))
    assert out["edge_logits"].shape == (2, 1, h4, w4)
    assert out["dp"].shape == (2, 2, h4, w4)
    assert inferred["edge"].shape == (1, h4, w4)
    assert inferred["dp"].shape == (2, h4, w4)
    assert ((inferred["edge"] >= 0) & (inferred["edge"] <= 1)).all()


def test_infer_edge_dp_rejects_a_batch(irn):
    with pytest.raises(ValueError, match="one image"):
        irn.infer_edge_dp(torch.randn(2, 3, 32, 32))


def test_infer_edge_is_flip_symmetric(irn):
    x = torch.randn(1, 3, 48, 64)
    with torch.no_grad():
        edge = irn.eval().infer_edge_dp(x)["edge"]
        edge_mirror = irn.infer_edge_dp(x.flip(-1))["edge"]
    # Averaging the logits of x and mirror(x) makes the map equivariant to the flip.
    torch.testing.assert_close(edge_mirror, edge.flip(-1), rtol=1e-5, atol=1e-6)


def test_backbone_is_frozen_and_stays_in_eval_mode(irn):
    irn.train()
    assert irn.training and irn.fc_edge1.training and irn.fc_dp7.training
    assert not any(m.training for m in irn.backbone.modules())
    assert not any(p.requires_grad for p in irn.backbone.parameters())
    head_params = [p for name, p in irn.named_parameters() if not name.startswith("backbone.")]
    assert head_params and all(p.requires_grad for p in head_params)

    out = irn(torch.randn(2, 3, 48, 48))
    (out["edge_logits"].sum() + out["dp"].sum()).backward()
    assert all(p.grad is None for p in irn.backbone.parameters())
    assert all(p.grad is not None for p in head_params)
    for tap in irn.taps(torch.randn(1, 3, 32, 32)):
        assert not tap.requires_grad


def test_mean_shift_is_subtracted_in_eval_mode_only(irn):
    x = torch.randn(1, 3, 32, 48)
    shift = torch.tensor([0.5, -2.0])
    with torch.no_grad():
        before_eval = irn.eval()(x)["dp"]
        before_train = irn.train()(x)["dp"]
        irn.set_mean_shift(shift)
        after_eval = irn.eval()(x)["dp"]
        after_train = irn.train()(x)["dp"]
    torch.testing.assert_close(after_eval, before_eval - shift.view(1, 2, 1, 1))
    torch.testing.assert_close(after_train, before_train)
    torch.testing.assert_close(irn.state_dict()["mean_shift.running_mean"], shift)


def test_param_groups_split_the_heads(irn):
    groups = irn.param_groups(lr=0.1, weight_decay=1e-4)
    assert [g["name"] for g in groups] == ["edge", "displacement"]
    assert groups[0]["lr"] == pytest.approx(0.1)
    assert groups[1]["lr"] == pytest.approx(0.1 * DP_LR_MULT)
    assert all(g["weight_decay"] == 1e-4 for g in groups)
    names = {id(p): name for name, p in irn.named_parameters()}
    edge = {names[id(p)].split(".")[0] for p in groups[0]["params"]}
    dp = {names[id(p)].split(".")[0] for p in groups[1]["params"]}
    assert edge == {f"fc_edge{i}" for i in range(1, 7)}
    assert dp == {f"fc_dp{i}" for i in range(1, 8)}
    grouped = [id(p) for g in groups for p in g["params"]]
    trainable = [id(p) for p in irn.parameters() if p.requires_grad]
    assert sorted(grouped) == sorted(trainable) and len(set(grouped)) == len(grouped)
    torch.optim.SGD(groups, lr=0.1)  # the groups are valid optimizer input


def test_edge_head_has_the_only_head_bias(irn):
    biases = [
        name
        for name, _ in irn.named_parameters()
        if name.endswith("bias") and not name.startswith("backbone.") and ".1." not in name
    ]
    assert biases == ["fc_edge6.bias"]  # GN shifts (".1.bias") aside
    assert irn.fc_dp7[3].bias is None


def test_convert_reference_state_dict_drops_aliases(irn):
    ours = irn.state_dict()
    reference = {
        ("resnet50." + k.removeprefix("backbone.") if k.startswith("backbone.") else k): v for k, v in ours.items()
    }
    reference["stage1.0.weight"] = ours["backbone.conv1.weight"]
    reference["backbone.0.0.weight"] = ours["backbone.conv1.weight"]
    reference["edge_layers.0.0.weight"] = ours["fc_edge1.0.weight"]
    reference["dp_layers.6.3.weight"] = ours["fc_dp7.3.weight"]
    reference["fc_dp7.4.running_mean"] = ours["mean_shift.running_mean"]
    converted = convert_reference_state_dict(reference)
    assert list(converted) == list(ours)
    build_irn(arch="resnet18").load_state_dict(converted, strict=True)


def _loss_inputs(batch: int, size: tuple[int, int], radius: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    path_index = build_path_index(radius, size)
    seg = rng.choice(np.array([0, 1, 2, 255], dtype=np.uint8), size=(batch, *size))
    labels = affinity_labels(seg, path_index)
    return path_index, [torch.from_numpy(labels[k]) for k in ("bg_pos", "fg_pos", "neg")]


def test_exact_displacement_field_has_zero_fg_loss():
    path_index, labels = _loss_inputs(2, (14, 18), radius=4)
    h, w = path_index.size
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32), indexing="ij")
    # D(p) = -p gives D(p) - D(p + d) = d for every pair: the perfect foreground displacement.
    dp = -torch.stack([ys, xs])[None].repeat(2, 1, 1, 1)
    pair = pair_displacement(dp, path_index)
    expected = torch.as_tensor(path_index.search_dst, dtype=torch.float32).t()[None, :, :, None]
    torch.testing.assert_close(pair, expected.expand_as(pair))
    out = irn_losses(torch.zeros(2, 1, h, w), dp, *labels, path_index)
    assert out["dp_fg_loss"].item() == 0.0
    assert out["dp_bg_loss"].item() > 0.0
    # Logit 0 gives sigmoid 0.5 everywhere, so every affinity is 0.5.
    torch.testing.assert_close(out["aff"], torch.full_like(out["aff"], 0.5))
    assert torch.isfinite(out["total"])


def test_losses_reject_mismatched_labels():
    path_index, labels = _loss_inputs(1, (12, 16), radius=3)
    h, w = path_index.size
    with pytest.raises(ValueError, match="affinity shape"):
        irn_losses(torch.zeros(1, 1, h, w), torch.zeros(1, 2, h, w), labels[0][:, :-1], *labels[1:], path_index)
    with pytest.raises(ValueError, match="dp must be"):
        pair_displacement(torch.zeros(1, 2, h + 1, w), path_index)


def test_mean_displacement_per_channel():
    dp = torch.stack([torch.full((3, 5, 7), 2.0), torch.full((3, 5, 7), -1.0)], dim=1)
    torch.testing.assert_close(mean_displacement(dp), torch.tensor([2.0, -1.0]))

"""SPG golden vectors: the network forward with closed-form parameters, the optimiser groups and
the pretrained-name mapping."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.masks.guidance import attention_map, spg_loss
from recam.models.spg import NEW_LAYERS, SPGInception, load_inception_pretrained, param_groups

GOLDEN_ANGLE = np.pi * (3 - np.sqrt(5))


def closed_form(index: int, name: str, shape) -> np.ndarray:
    """README "Closed-form network parameters" of golden-spg."""
    shape = tuple(int(d) for d in shape)
    s = np.sin(GOLDEN_ANGLE * np.arange(int(np.prod(shape)), dtype=np.float64) + 0.11 * index).reshape(shape)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        value = 1.2 / np.sqrt(fan_in) * s + 1.25 / fan_in
    elif name.endswith("running_var"):
        value = 1 + 0.5 * np.abs(s)
    elif name.endswith("running_mean") or name.endswith("bias"):
        value = 0.1 * s
    elif name.endswith("weight"):
        value = 1 + 0.25 * s
    else:
        raise ValueError(name)
    return value.astype(np.float32)


def golden_model(z: dict, dtype: torch.dtype) -> SPGInception:
    model = SPGInception(num_classes=z["class_maps_f32"].shape[1])
    state = model.state_dict()
    for i, name in enumerate(z["param_names"].tolist()):
        shape = [d for d in z["param_shapes"][i] if d > 0] or [1]
        value = closed_form(i, name, state[name].shape)
        assert list(value.shape) == list(state[name].shape) and int(np.prod(shape)) == value.size
        assert np.isclose(value.astype(np.float64).sum(), z["param_sums"][i], rtol=1e-9, atol=0)
        first = z["param_first4"][i]
        assert np.allclose(value.ravel()[:4], first[~np.isnan(first)][:4], rtol=1e-6)
        state[name] = torch.from_numpy(value)
    # every parameter and buffer is in the file (num_batches_tracked aside)
    assert {k for k in state if not k.endswith("num_batches_tracked")} == set(z["param_names"].tolist())
    model.load_state_dict(state)
    return model.to(dtype).eval()


def check(got: torch.Tensor, ref: np.ndarray, rtol: float, scale: float) -> None:
    atol = scale * max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=rtol, atol=atol)


@pytest.mark.parametrize("precision", ["f32", "f64"])
def test_spg_forward(golden_spg, precision):
    z = golden_spg("spg_forward")
    dtype, tol = (torch.float32, 1e-4) if precision == "f32" else (torch.float64, 1e-9)
    model = golden_model(z, dtype)
    x = torch.from_numpy(z["input"]).to(dtype)
    taps = {}
    model.Mixed_5d.register_forward_hook(lambda m, i, o: taps.__setitem__("mixed_5d", o))
    model.Mixed_6e.register_forward_hook(lambda m, i, o: taps.__setitem__("mixed_6e", o))
    with torch.no_grad():
        out = model(x)
    for key, ref in (
        ("class_maps", "class_maps"),
        ("logits", "logits"),
        ("side3", "side3"),
        ("side4", "side4"),
        ("out_seg", "out_seg"),
    ):
        check(out[key], z[f"{ref}_{precision}"], tol, tol)
    if precision == "f32":
        check(taps["mixed_5d"], z["mixed_5d"], 1e-4, 1e-4)
        check(taps["mixed_6e"], z["mixed_6e"], 1e-4, 1e-4)


@pytest.mark.parametrize("suffix", ["", "_acfalse"])
def test_spg_forward_readouts_and_loss(golden_spg, suffix):
    z = golden_spg("spg_forward")
    label = torch.from_numpy(z["label"]).long()
    align = suffix == ""
    stored = {k: torch.from_numpy(z[f"{k}_f32"]) for k in ("logits", "class_maps", "side3", "side4", "out_seg")}
    atten = attention_map(stored["class_maps"], label, size=z["atten_map"].shape[-1], align_corners=align)
    np.testing.assert_allclose(atten.numpy(), z[f"atten_map{suffix}"], rtol=1e-4, atol=1e-4)
    out = spg_loss(stored, label, size=z["atten_map"].shape[-1], align_corners=align)
    tag = "_f32" if align else "_acfalse"
    for part in ("cls", "side4", "side3", "back"):
        np.testing.assert_allclose(out[part].item(), z[f"loss_{part}{tag}"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["loss"].item(), z[f"loss_total{tag}"], rtol=1e-5, atol=1e-6)


def test_spg_forward_loss_float64(golden_spg):
    z = golden_spg("spg_forward")
    stored = {k: torch.from_numpy(z[f"{k}_f64"]) for k in ("logits", "class_maps", "side3", "side4", "out_seg")}
    out = spg_loss(stored, torch.from_numpy(z["label"]).long(), size=z["atten_map"].shape[-1])
    np.testing.assert_allclose(out["loss"].item(), z["loss_total_f64"], rtol=1e-5, atol=1e-6)


def test_optimiser_groups(golden_spg):
    z = golden_spg("optim_and_pretrained")
    model = torch.nn.DataParallel(SPGInception(num_classes=10))  # names with `module.`, as the reference's
    names = [n for n, _ in model.named_parameters()]
    assert names == z["param_names"].tolist()
    lr = float(z["base_lr"])
    groups = param_groups(model.named_parameters(), lr=lr, weight_decay=5e-4)
    index = {id(p): g for g, group in enumerate(groups) for p in group["params"]}
    np.testing.assert_array_equal([index[id(p)] for _, p in model.named_parameters()], z["param_group"])
    np.testing.assert_allclose([g["lr"] for g in groups], z["group_lr"], rtol=1e-12)
    np.testing.assert_array_equal([g["weight_decay"] for g in groups], z["group_weight_decay"])
    np.testing.assert_array_equal([len(g["params"]) for g in groups], z["group_size"])
    # the paper's 10x for the new layers (our flag): new layers move to groups 2-3
    paper = param_groups(model.named_parameters(), lr=lr, weight_decay=5e-4, new_layer_lr_mult=10.0)
    new = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[1] in NEW_LAYERS)
    assert sum(p.numel() for g in paper[2:] for p in g["params"]) == new
    assert [g["lr"] for g in paper] == pytest.approx([lr, 2 * lr, 10 * lr, 20 * lr])


def test_pretrained_name_mapping(golden_spg):
    import torchvision

    z = golden_spg("optim_and_pretrained")
    model = SPGInception(num_classes=10)
    keys = ["module." + k for k in model.state_dict()]
    assert keys == z["state_keys"].tolist()
    torch.manual_seed(0)
    with torch.device("meta"):
        layout = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    file_state = {
        k: (torch.randn(v.shape) if v.dtype.is_floating_point else torch.full(v.shape, 7, dtype=v.dtype))
        for k, v in layout.items()
    }
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = load_inception_pretrained(model, file_state)
    loaded = np.array(["module." + k in {"module." + x for x in report["loaded"]} for k in before])
    np.testing.assert_array_equal(loaded, z["state_loaded_from_pretrained"])
    assert sorted(report["unused"]) == sorted(z["pretrained_keys_unused"].tolist())
    after = model.state_dict()
    for k in report["loaded"]:
        assert torch.equal(after[k], file_state[k])
    assert all(torch.equal(after[k], before[k]) for k in before if k.split(".")[0] in NEW_LAYERS)

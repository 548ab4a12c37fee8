"""Golden `irn_edge_forward` (IRNet with closed-form parameters) and `irn_forward_losses`.

Every size, name and parameter comes from the files. Tolerances (golden README):
irn_edge_forward float32 rtol 1e-4, atol 1e-4·max(1, max|ref|), float64 rtol/atol 1e-9, head
param sums rtol 1e-9; irn_forward_losses labels exact, float maps and losses rtol/atol 1e-5,
gradients rtol 1e-4 atol 1e-6.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recam.masks.affinity import affinity_labels
from recam.masks.irn_losses import irn_losses, mean_displacement
from recam.masks.path_index import PathIndex, build_path_index
from recam.models.irn import IRNet, build_irn
from tests.golden.closed_form import assign_closed_form, backbone_tensor_names, closed_form_tensor

FORWARD = "irn_edge_forward"
LOSSES = "irn_forward_losses"
LABELS = ("bg_pos", "fg_pos", "neg")
FLOAT_MAPS = (
    "aff",
    "pos_aff_loss_map",
    "neg_aff_loss_map",
    "pair_disp",
    "dp_fg_loss_map",
    "dp_bg_loss_map",
    "disp_target",
)
SCALAR_LOSSES = ("pos_aff_loss", "neg_aff_loss", "dp_fg_loss", "dp_bg_loss")


def _shape(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in row if d > 0)  # shape rows are right-padded with 0


def _assert_close(name: str, got: np.ndarray, ref: np.ndarray, *, rtol: float, atol: float) -> None:
    got, ref = np.asarray(got), np.asarray(ref)
    assert got.shape == ref.shape, f"{name}: shape {got.shape} vs {ref.shape}"
    worst = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    assert np.allclose(got, ref, rtol=rtol, atol=atol), f"{name}: max |got - ref| = {worst:.3g} (atol {atol:.3g})"


def _f32_atol(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.max(np.abs(ref))))


@pytest.fixture
def closed_form_irn(golden) -> tuple[dict, IRNet]:
    """The golden file and an IRNet carrying its closed-form parameters (float32, eval mode)."""
    z = golden(FORWARD)
    model = build_irn(arch="resnet50", pretrained="none")
    assign_closed_form(model.backbone, backbone_tensor_names("resnet50"))
    assign_closed_form(model, [str(n) for n in z["head_param_names"]], start_index=int(z["head_index_offset"]))
    return z, model.eval()


def test_head_keys_match_reference_order(closed_form_irn):
    z, model = closed_form_irn
    state = model.state_dict()
    backbone = [
        k.removeprefix("backbone.")
        for k in state
        if k.startswith("backbone.") and not k.endswith("num_batches_tracked")
    ]
    assert backbone == backbone_tensor_names("resnet50")
    assert int(z["head_index_offset"]) == len(backbone)
    head = [k for k in state if not k.startswith("backbone.")]
    assert head == [str(n) for n in z["head_param_names"]]
    assert [tuple(state[k].shape) for k in head] == [_shape(row) for row in z["head_param_shapes"]]


def test_head_closed_form_sums_and_first4(closed_form_irn):
    z, model = closed_form_irn
    state = model.state_dict()
    offset = int(z["head_index_offset"])
    for j, name in enumerate(str(n) for n in z["head_param_names"]):
        value = closed_form_tensor(offset + j, name, _shape(z["head_param_shapes"][j]))
        np.testing.assert_allclose(value.astype(np.float64).sum(), z["head_param_sums"][j], rtol=1e-9, err_msg=name)
        first4 = z["head_param_first4"][j]
        count = min(4, value.size)
        np.testing.assert_array_equal(value.reshape(-1)[:count], first4[:count], err_msg=name)
        assert np.isnan(first4[count:]).all()
        np.testing.assert_array_equal(state[name].numpy(), value, err_msg=name)


@pytest.mark.parametrize("suffix", ["f32", "f64"])
def test_irn_forward_matches_reference(closed_form_irn, suffix):
    z, model = closed_form_irn
    dtype = torch.float32 if suffix == "f32" else torch.float64
    # For f64, the float32 parameters cast to float64: the README's f64 run.
    net = model.to(dtype)
    x = torch.from_numpy(z["input"]).to(dtype)
    with torch.no_grad():
        pair = net(torch.cat([x, x.flip(-1)]))
        inferred = net.infer_edge_dp(x)
    got = {
        "edge_logits": pair["edge_logits"].numpy(),
        "dp_out": pair["dp"].numpy(),
        "edge": inferred["edge"].numpy(),
        "dp": inferred["dp"].numpy(),
    }
    for name, value in got.items():
        ref = z[f"{name}_{suffix}"]
        assert value.dtype == ref.dtype, f"{name}: dtype {value.dtype} vs {ref.dtype}"
        if suffix == "f32":
            _assert_close(f"{name}_{suffix}", value, ref, rtol=1e-4, atol=_f32_atol(ref))
        else:
            _assert_close(f"{name}_{suffix}", value, ref, rtol=1e-9, atol=1e-9)


def _labels(z: dict) -> tuple[dict[str, np.ndarray], PathIndex]:
    radius = int(z["radius"])
    size = tuple(int(v) for v in z["path_default_size"])
    path_index = build_path_index(radius, size)
    return affinity_labels(z["seg_labels"], path_index), path_index


def test_irn_loss_labels_from_seg_labels(golden):
    z = golden(LOSSES)
    labels, _ = _labels(z)
    for name in LABELS:
        ref = z[f"{name}_label"]
        assert labels[name].dtype == ref.dtype and labels[name].shape == ref.shape, name
        np.testing.assert_array_equal(labels[name], ref, err_msg=name)


def test_irn_losses_maps_values_and_gradients(golden):
    z = golden(LOSSES)
    labels, path_index = _labels(z)
    edge_logits = torch.from_numpy(z["edge_logits"]).requires_grad_(True)
    dp = torch.from_numpy(z["dp"]).requires_grad_(True)
    out = irn_losses(edge_logits, dp, *(torch.from_numpy(labels[name]) for name in LABELS), path_index)

    for name in FLOAT_MAPS:
        _assert_close(name, out[name].detach().numpy(), z[name], rtol=1e-5, atol=1e-5)
    for name in SCALAR_LOSSES:
        _assert_close(name, out[name].item(), z[name], rtol=1e-5, atol=1e-5)
    expected_total = (z["pos_aff_loss"] + z["neg_aff_loss"]) / 2 + (z["dp_fg_loss"] + z["dp_bg_loss"]) / 2
    _assert_close("total", out["total"].item(), expected_total, rtol=1e-5, atol=1e-5)

    out["total"].backward()
    _assert_close("grad_edge_logits", edge_logits.grad.numpy(), z["total_loss_grad_edge_logits"], rtol=1e-4, atol=1e-6)
    _assert_close("grad_dp", dp.grad.numpy(), z["total_loss_grad_dp"], rtol=1e-4, atol=1e-6)


def test_mean_displacement_is_the_stored_mean_shift(golden):
    z = golden(LOSSES)
    got = mean_displacement(torch.from_numpy(z["dp"])).numpy()
    _assert_close("dp_mean_after_training", got, z["dp_mean_after_training"], rtol=1e-5, atol=1e-6)

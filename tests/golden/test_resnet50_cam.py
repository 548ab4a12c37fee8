"""Golden `resnet50_cam_forward`: our CamNet with the closed-form parameters vs the reference.

Every size, name and shape comes from the file. Tolerances (golden README): float32 outputs
rtol 1e-4, atol 1e-4·max(1, max|ref|); a float64 run against the *_f64 arrays rtol 1e-9, atol 1e-9;
param_sums rtol 1e-9.
"""

from __future__ import annotations

import numpy as np
import torch
import torchvision.models as tvm

from recam.models.backbone import Backbone, FixedBatchNorm2d
from recam.models.cam_net import CamNet, build_cam_net
from tests.golden.closed_form import assign_closed_form, backbone_tensor_names, closed_form_tensor

CASE = "resnet50_cam_forward"
STAGES = ("stage1", "stage2", "stage3", "stage4")


def _shape(row: np.ndarray) -> tuple[int, ...]:
    return tuple(int(d) for d in row if d > 0)  # param_shapes rows are right-padded with 0


def _assert_close(name: str, got: np.ndarray, ref: np.ndarray, *, rtol: float, atol: float) -> None:
    assert got.shape == ref.shape, f"{name}: shape {got.shape} vs {ref.shape}"
    worst = float(np.max(np.abs(got.astype(np.float64) - ref.astype(np.float64))))
    assert np.allclose(got, ref, rtol=rtol, atol=atol), f"{name}: max |got - ref| = {worst:.3g} (atol {atol:.3g})"


def _f32_atol(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.max(np.abs(ref))))


def _load_closed_form(model: CamNet, z: dict[str, np.ndarray]) -> None:
    names = [str(n) for n in z["param_names"]]
    backbone_names, head_names = names[:-1], names[-1:]
    assign_closed_form(model.backbone, backbone_names)
    assign_closed_form(model, head_names, start_index=len(backbone_names))


def _closed_form_model(z: dict[str, np.ndarray], dtype: torch.dtype) -> CamNet:
    num_classes = _shape(z["param_shapes"][-1])[0]
    model = build_cam_net(arch="resnet50", num_classes=num_classes, output_stride=16, pretrained="none")
    _load_closed_form(model, z)
    return model.to(dtype).eval()


def _run(model: CamNet, x: torch.Tensor) -> dict[str, np.ndarray]:
    with torch.no_grad():
        stages = model.backbone.forward_stages(x)
        out = model(x)
        maps = model.class_maps(out["features"])
        pair = model.cams(torch.cat([x, x.flip(-1)]))
    return {
        **{name: stages[name].numpy() for name in STAGES},
        "logits": out["logits"].numpy(),
        "class_maps": maps.numpy(),
        "cams": torch.relu(maps).numpy(),
        # Flip fusion of spec §4.2: relu(maps[0]) + mirror(relu(maps[1])), a sum.
        "fused_flip_cam": (pair[0] + pair[1].flip(-1)).numpy(),
    }


def test_parameter_names_follow_torchvision_and_camnet_keys(golden):
    z = golden(CASE)
    names = [str(n) for n in z["param_names"]]
    assert names[:-1] == backbone_tensor_names("resnet50")
    assert names[-1] == "classifier.weight"
    model = build_cam_net(arch="resnet50", num_classes=_shape(z["param_shapes"][-1])[0])
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    # Our CamNet's keys are the golden names with the backbone under "backbone.".
    assert list(state) == ["backbone." + n for n in names[:-1]] + names[-1:]
    assert [tuple(v.shape) for v in state.values()] == [_shape(row) for row in z["param_shapes"]]


def test_closed_form_rule_matches_param_sums_and_first4(golden):
    z = golden(CASE)
    for index, (name, shape_row) in enumerate(zip(z["param_names"], z["param_shapes"])):
        value = closed_form_tensor(index, str(name), _shape(shape_row))
        assert value.dtype == np.float32
        np.testing.assert_allclose(value.sum(dtype=np.float64), z["param_sums"][index], rtol=1e-9, err_msg=str(name))
        first = value.reshape(-1)[:4]
        expected = z["param_first4"][index][: first.size]
        np.testing.assert_array_equal(first, expected, err_msg=str(name))


def test_forward_float32(golden):
    z = golden(CASE)
    got = _run(_closed_form_model(z, torch.float32), torch.from_numpy(z["input"]))
    for name in STAGES:
        ref = z[f"{name}_out"]
        _assert_close(name, got[name], ref, rtol=1e-4, atol=_f32_atol(ref))
    for name in ("logits", "class_maps", "cams", "fused_flip_cam"):
        ref = z[f"{name}_f32"]
        assert got[name].dtype == np.float32
        _assert_close(name, got[name], ref, rtol=1e-4, atol=_f32_atol(ref))


def test_forward_float64(golden):
    z = golden(CASE)
    x = torch.from_numpy(z["input"]).to(torch.float64)  # the float32 input values, run in float64
    got = _run(_closed_form_model(z, torch.float64), x)
    for name in ("logits", "class_maps", "cams", "fused_flip_cam"):
        ref = z[f"{name}_f64"]
        assert got[name].dtype == np.float64
        _assert_close(name, got[name], ref, rtol=1e-9, atol=1e-9)


def test_channels_last_matches_golden(golden):
    z = golden(CASE)
    model = _closed_form_model(z, torch.float32).to(memory_format=torch.channels_last)
    x = torch.from_numpy(z["input"]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        logits = model(x)["logits"].numpy()
    _assert_close("logits", logits, z["logits_f32"], rtol=1e-4, atol=_f32_atol(z["logits_f32"]))


def test_torchvision_dilated_layer4_is_not_the_reference(golden):
    """torchvision's `replace_stride_with_dilation=[False, False, True]` gives the same output
    size but dilates layer4's later blocks; the reference only removes the stride. Same
    parameters, outputs far outside tolerance: the reason `set_output_stride` edits strides."""
    z = golden(CASE)
    resnet = tvm.resnet50(weights=None, norm_layer=FixedBatchNorm2d, replace_stride_with_dilation=[False, False, True])
    resnet.fc = torch.nn.Identity()
    dilated = CamNet(Backbone(resnet), num_classes=_shape(z["param_shapes"][-1])[0])
    _load_closed_form(dilated, z)
    got = _run(dilated.eval(), torch.from_numpy(z["input"]))
    for name, ref in (("stage4", z["stage4_out"]), ("logits", z["logits_f32"])):
        assert got[name].shape == ref.shape  # same size: only the values tell the variants apart
        assert not np.allclose(got[name], ref, rtol=1e-4, atol=_f32_atol(ref)), name
    # Stages before layer4 are identical, so the difference is layer4's dilation alone.
    _assert_close("stage3", got["stage3"], z["stage3_out"], rtol=1e-4, atol=_f32_atol(z["stage3_out"]))


def test_logits_are_mean_of_class_maps(golden):
    """Spec §2.3: W · GAP(f) = GAP(W f), on the golden arrays themselves and on ours."""
    z = golden(CASE)
    np.testing.assert_allclose(z["class_maps_f64"].mean(axis=(2, 3)), z["logits_f64"], rtol=1e-9, atol=1e-12)
    got = _run(_closed_form_model(z, torch.float64), torch.from_numpy(z["input"]).double())
    np.testing.assert_allclose(got["class_maps"].mean(axis=(2, 3)), got["logits"], rtol=1e-9, atol=1e-12)

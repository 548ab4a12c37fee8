"""Per-stage precision: the amp switches resolve to runtime.amp, the presets set TF32, CPU bf16
autocast really runs, ReCAM's class features and SCE loss stay float32, and with every switch off
the outputs are the float32 ones bit for bit."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from recam.data.datasets import collate_multiscale, multiscale_inputs
from recam.engine.loop import autocast, compiled
from recam.models.cam_net import build_cam_net
from recam.models.recam_head import class_features, normalize_cams, recam_ce_loss
from recam.models.recam_net import RecamNet
from recam.stages.seeds import export_batch
from tests.conftest import compose_config

AMP_STAGES = ("cam", "recam", "seeds", "irn", "seg", "eval_seg")
CPU = torch.device("cpu")


def test_stage_switches_default_to_runtime_amp() -> None:
    cfg = compose_config(["runtime.amp=true", "seeds.amp=false"])
    assert all(getattr(cfg, stage).amp is None for stage in AMP_STAGES if stage != "seeds")
    assert {stage: cfg.amp_for(stage) for stage in AMP_STAGES} == {
        "cam": True,
        "recam": True,
        "seeds": False,
        "irn": True,
        "seg": True,
        "eval_seg": True,
    }
    off = compose_config(["recam.amp=true"])
    assert [off.amp_for(stage) for stage in AMP_STAGES] == [False, True, False, False, False, False]


def test_tf32_off_for_the_paper_on_in_the_fast_preset() -> None:
    paper = compose_config(["experiment=voc12_paper", "dataset=voc12"])
    assert (paper.runtime.tf32, paper.runtime.amp, paper.runtime.compile) == (False, False, False)
    fast = compose_config(["experiment=voc12_paper", "dataset=voc12", "runtime=fast"])
    assert (fast.runtime.tf32, fast.runtime.amp, fast.runtime.channels_last) == (True, True, True)
    assert fast.runtime.num_workers == paper.runtime.num_workers == 8  # the experiment's other runtime keys stay
    assert all(fast.amp_for(stage) for stage in AMP_STAGES)
    assert compose_config(["runtime=fast", "runtime.tf32=false"]).runtime.tf32 is False


def test_cpu_autocast_runs_bf16_only_when_asked() -> None:
    conv = torch.nn.Conv2d(3, 4, kernel_size=3)
    x = torch.randn(1, 3, 8, 8)
    with autocast(CPU, False):
        assert conv(x).dtype == torch.float32
    with autocast(CPU, True):
        assert conv(x).dtype == torch.bfloat16


def test_recam_class_features_and_loss_stay_float32_under_autocast() -> None:
    torch.manual_seed(0)
    model = RecamNet(build_cam_net(arch="resnet18", num_classes=3, pretrained="none", fixed_bn=False)).eval()
    x = torch.randn(2, 3, 64, 64)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    with torch.no_grad(), autocast(CPU, True):
        parts = model(x, labels)
        out = model.cam_net(x)
    assert out["features"].dtype == torch.bfloat16  # the backbone did run in bf16
    # The expected SCE: everything after the backbone in float32, from the same bf16 features.
    feats = out["features"].float()
    with torch.no_grad():
        cams = normalize_cams(F.relu(F.conv2d(feats, model.cam_net.classifier.weight)))
        expected = recam_ce_loss(class_features(cams, feats), model.predictor.weight, labels)["loss"]
    assert parts["sce"].dtype == parts["bce"].dtype == torch.float32
    assert abs(float(parts["sce"]) - float(expected)) < 1e-6
    # ... which a bf16 head would not give: the check above can tell the two apart.
    with torch.no_grad(), autocast(CPU, True):
        half = recam_ce_loss(
            class_features(normalize_cams(F.relu(F.conv2d(feats, model.cam_net.classifier.weight))), feats),
            model.predictor.weight,
            labels,
        )["loss"]
    assert abs(float(half) - float(expected)) > 1e-6


def _bucket(sizes: list[tuple[int, int]]) -> dict:
    g = torch.Generator().manual_seed(1)
    samples = []
    for i, (height, width) in enumerate(sizes):
        image = (torch.rand(height, width, 3, generator=g) * 255).to(torch.uint8).numpy()
        label = torch.zeros(3)
        label[i % 3] = 1
        samples.append(
            {
                "id": str(i),
                "size": (height, width),
                "label": label.numpy(),
                "images": multiscale_inputs(image, [1.0, 0.5], [0.5] * 3, [0.25] * 3),
            }
        )
    return collate_multiscale(samples)


def test_seed_export_amp_off_is_float32_and_on_is_close() -> None:
    torch.manual_seed(0)
    model = build_cam_net(arch="resnet18", num_classes=3, pretrained="none").eval()
    weight = model.classifier.weight.detach().flatten(1)
    batch = _bucket([(40, 48), (40, 48)])
    (ref, _) = export_batch(model, weight, batch, CPU, amp=False)
    again, _ = export_batch(model, weight, batch, CPU, amp=False)
    assert torch.equal(ref["high_res"], again["high_res"]) and ref["high_res"].dtype == torch.float32
    (bf16, _) = export_batch(model, weight, batch, CPU, amp=True)
    assert bf16["high_res"].dtype == torch.float32  # fused and normalised in float32
    diff = float((bf16["high_res"] - ref["high_res"]).abs().max())
    assert 0 < diff < 0.1, diff  # autocast did change the backbone, by a bf16-sized amount (maps lie in [0, 1])


def test_compile_switch_off_is_the_model_itself() -> None:
    model = torch.nn.Linear(2, 2)
    assert compiled(model, False) is model


@pytest.mark.slow
def test_compiled_training_step_matches_eager() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3),
        torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1),
        torch.nn.Flatten(),
        torch.nn.Linear(4, 2),
    )
    x = torch.randn(4, 3, 16, 16)
    eager = model(x)
    fast = compiled(model, True)(x)
    assert torch.allclose(eager, fast, atol=1e-5)

"""The speed switches keep the numbers: folded BatchNorm equals conv + BN, the CRF workers start
without torch, and the reference-layout input of bench_seeds is what the reference feeds."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recam.models.cam_net import build_cam_net
from recam.models.fold import fold_batchnorm

REPO = Path(__file__).resolve().parents[2]


def _with_running_stats(model: nn.Module) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so folding has something to fold."""
    gen = torch.Generator().manual_seed(0)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            with torch.no_grad():
                module.running_mean.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
                module.running_var.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.weight.copy_(torch.rand(module.num_features, generator=gen) + 0.5)
                module.bias.copy_(torch.randn(module.num_features, generator=gen) * 0.1)
    return model.eval()


def test_folded_batchnorm_equals_conv_then_bn() -> None:
    torch.manual_seed(0)
    for fixed_bn in (True, False):
        model = _with_running_stats(build_cam_net(arch="resnet18", num_classes=5, pretrained="none", fixed_bn=fixed_bn))
        folded = fold_batchnorm(copy.deepcopy(model))
        assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
        x = torch.randn(2, 3, 45, 61)
        with torch.no_grad():
            expected, got = model.backbone(x), folded.backbone(x)
            got_nhwc = folded.to(memory_format=torch.channels_last).backbone(
                x.contiguous(memory_format=torch.channels_last)
            )
        scale = float(expected.abs().max())
        assert float((got - expected).abs().max()) < 1e-5 * scale
        assert float((got_nhwc - expected).abs().max()) < 1e-5 * scale


def test_crf_workers_and_the_entry_import_no_torch() -> None:
    code = (
        "import sys, recam.stages.crf_workers, recam.train; "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[]"


def test_reference_layout_reaches_the_network_channels_last() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    from bench_seeds import reference_inputs

    image = np.random.default_rng(0).integers(0, 256, (37, 45, 3), dtype=np.uint8)
    batches = reference_inputs(image, [1.0, 0.5])
    assert [tuple(b.shape) for b in batches] == [(2, 3, 37, 45), (2, 3, 18, 22)]
    assert all(b.is_contiguous(memory_format=torch.channels_last) and not b.is_contiguous() for b in batches)
    torch.testing.assert_close(batches[0][1], batches[0][0].flip(-1))


def test_export_layout_is_the_fastest_per_device_unless_set() -> None:
    from recam.config import SeedsStage
    from recam.stages.seeds import export_channels_last

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert export_channels_last(SeedsStage(), False, cpu) is True
    assert export_channels_last(SeedsStage(), False, cuda) is False
    assert export_channels_last(SeedsStage(), True, cuda) is True
    assert export_channels_last(SeedsStage(channels_last=False), True, cpu) is False
    assert export_channels_last(SeedsStage(channels_last=True), False, cuda) is True


def test_folded_export_equals_the_plain_export() -> None:
    from recam.data.datasets import collate_multiscale, multiscale_inputs
    from recam.stages.seeds import export_batch

    torch.manual_seed(0)
    model = _with_running_stats(build_cam_net(arch="resnet18", num_classes=4, pretrained="none"))
    weight = model.classifier.weight.detach().flatten(1)
    image = np.random.default_rng(1).integers(0, 256, (41, 50, 3), dtype=np.uint8)
    label = np.array([1, 0, 1, 0], np.float32)
    batch = collate_multiscale(
        [
            {
                "id": "a",
                "size": (41, 50),
                "label": label,
                "images": multiscale_inputs(image, [1.0, 0.5, 1.5], [0.5] * 3, [0.25] * 3),
            }
        ]
    )
    (plain,) = export_batch(model, weight, batch, torch.device("cpu"), amp=False)
    folded_model = fold_batchnorm(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    (folded,) = export_batch(folded_model, weight, batch, torch.device("cpu"), amp=False)
    for key in ("cam", "high_res"):
        torch.testing.assert_close(folded[key], plain[key], rtol=0, atol=2e-5)


def test_device_multiscale_matches_the_host_path_to_a_grey_level() -> None:
    """seeds.resize_on_device: the same sizes as PIL's path, the 1.0 scale equal, the rescaled
    pixels within two grey levels of PIL's bicubic (rounding), and the seeds close."""
    from recam.data import transforms as T
    from recam.data.datasets import collate_multiscale, device_multiscale, multiscale_inputs
    from recam.stages.seeds import export_batch

    rng = np.random.default_rng(2)
    coarse = rng.integers(0, 256, (6, 7, 3), dtype=np.uint8)  # a smooth image (PIL upscaled): natural statistics
    image = T.pil_resize(coarse, (53, 61))
    mean, std, scales = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225], [1.0, 0.5, 1.5, 2.0]
    host = multiscale_inputs(image, scales, mean, std)
    pixels = torch.from_numpy(T.to_chw(image))[None]
    device = device_multiscale(pixels, scales, mean, std)
    grey = 1 / 255 / min(std)  # one grey level in normalised units
    for scale, h, d in zip(scales, host, device):
        assert d.shape[1:] == h.shape and d.dtype == torch.float32
        diff = (d[0] - h).abs().max().item()
        assert diff <= (1e-5 if scale == 1.0 else 2 * grey + 1e-5), (scale, diff)
    torch.manual_seed(0)
    model = _with_running_stats(build_cam_net(arch="resnet18", num_classes=4, pretrained="none"))
    weight = model.classifier.weight.detach().flatten(1)
    label = np.array([0, 1, 1, 0], np.float32)
    item = {"id": "a", "size": image.shape[:2], "label": label}
    (ref,) = export_batch(model, weight, collate_multiscale([{**item, "images": host}]), torch.device("cpu"), False)
    (ours,) = export_batch(model, weight, {**collate_multiscale([{**item, "images": host}]), "images": device},
                           torch.device("cpu"), False)  # fmt: skip
    assert (ours["high_res"] - ref["high_res"]).abs().max().item() < 0.05

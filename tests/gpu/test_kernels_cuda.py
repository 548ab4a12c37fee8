"""Kernels and models on CUDA against CPU: the sparse random walk, channels_last forwards, bf16
autocast of the seed export, and checkpoints written on the GPU loaded on the CPU."""

from __future__ import annotations

import pytest
import torch

from recam.data.datasets import collate_multiscale, multiscale_inputs
from recam.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from recam.engine.loop import autocast
from recam.masks.random_walk import random_walk, random_walk_dense
from recam.models.cam_net import build_cam_net
from recam.models.recam_net import RecamNet
from recam.stages.seeds import export_batch

pytestmark = pytest.mark.gpu
CUDA, CPU = torch.device("cuda"), torch.device("cpu")


@pytest.mark.parametrize("classes,height,width,exp_times", [(3, 31, 23, 8), (1, 94, 125, 8), (2, 6, 5, 3)])
def test_sparse_walk_on_cuda_equals_cpu(classes, height, width, exp_times) -> None:
    gen = torch.Generator().manual_seed(classes)
    cams = torch.rand(classes, height, width, generator=gen)
    edge = torch.rand(1, height, width, generator=gen) ** 3
    cpu = random_walk(cams, edge, exp_times=exp_times)
    cuda = random_walk(cams.to(CUDA), edge.to(CUDA), exp_times=exp_times)
    assert cuda.device.type == "cuda" and cuda.dtype == torch.float32
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-4, atol=1e-6)
    if height * width < 1000:  # the dense oracle in float64 on the GPU as well
        dense = random_walk_dense(cams.double().to(CUDA), edge.double().to(CUDA), exp_times=exp_times)
        torch.testing.assert_close(
            random_walk(cams.double().to(CUDA), edge.double().to(CUDA), exp_times=exp_times),
            dense,
            rtol=1e-9,
            atol=1e-12,
        )


def _bucket(count: int = 2) -> dict:
    gen = torch.Generator().manual_seed(0)
    samples = []
    for i in range(count):
        image = (torch.rand(75, 100, 3, generator=gen) * 255).to(torch.uint8).numpy()
        label = torch.zeros(20)
        label[[i, 7]] = 1
        samples.append(
            {
                "id": str(i),
                "size": (75, 100),
                "label": label.numpy(),
                "images": multiscale_inputs(image, [1.0, 0.5, 1.5, 2.0], [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            }
        )
    return collate_multiscale(samples)


@pytest.mark.parametrize("channels_last", [False, True])
def test_seed_export_on_cuda_equals_cpu(channels_last) -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.manual_seed(0)
    model = build_cam_net(arch="resnet50", num_classes=20, pretrained="none").eval()
    weight = model.classifier.weight.detach().flatten(1)
    batch = _bucket()
    cpu = export_batch(model, weight, batch, CPU, amp=False)
    gpu_model = model.to(CUDA)
    if channels_last:
        gpu_model = gpu_model.to(memory_format=torch.channels_last)
    cuda = export_batch(gpu_model, weight.to(CUDA), batch, CUDA, amp=False)
    for ours, theirs in zip(cuda, cpu):
        torch.testing.assert_close(ours["high_res"].cpu(), theirs["high_res"], rtol=0, atol=2e-4)
        torch.testing.assert_close(ours["cam"].cpu(), theirs["cam"], rtol=0, atol=2e-4)
    amp = export_batch(gpu_model, weight.to(CUDA), batch, CUDA, amp=True)
    diff = max(float((a["high_res"].cpu() - b["high_res"]).abs().max()) for a, b in zip(amp, cpu))
    assert 0 < diff < 0.15, diff  # bf16 changes the maps (values in [0, 1]) by a bf16-sized amount (CPU bf16: 0.046)


def test_recam_head_float32_under_cuda_autocast() -> None:
    torch.manual_seed(0)
    model = RecamNet(build_cam_net(arch="resnet18", num_classes=4, pretrained="none", fixed_bn=False)).to(CUDA)
    x = torch.randn(2, 3, 64, 64, device=CUDA)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 0]], device=CUDA)
    with autocast(CUDA, True):
        parts = model(x, labels)
    assert parts["sce"].dtype == parts["bce"].dtype == torch.float32
    (parts["bce"] + parts["sce"]).backward()
    assert model.predictor.weight.grad.dtype == torch.float32 and torch.isfinite(model.predictor.weight.grad).all()


def test_checkpoint_written_on_gpu_loads_on_cpu(tmp_path) -> None:
    torch.manual_seed(0)
    model = build_cam_net(arch="resnet18", num_classes=20, pretrained="none").to(CUDA)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(2, 3, 64, 64, device=CUDA))["logits"].sum().backward()
    optimizer.step()
    save_checkpoint(tmp_path / "gpu.pt", {"model": model.state_dict(), "optimizer": optimizer.state_dict()})
    state = load_checkpoint(tmp_path / "gpu.pt")  # map_location=cpu
    assert all(v.device.type == "cpu" for v in state["model"].values())
    cpu_model = build_cam_net(arch="resnet18", num_classes=20, pretrained="none")
    load_model_state(cpu_model, state["model"], tmp_path / "gpu.pt")
    cpu_optimizer = torch.optim.SGD(cpu_model.parameters(), lr=0.1, momentum=0.9)
    cpu_optimizer.load_state_dict(state["optimizer"])
    x = torch.randn(1, 3, 64, 64)
    model.eval()
    cpu_model.eval()
    torch.testing.assert_close(cpu_model(x)["logits"], model(x.to(CUDA))["logits"].cpu(), rtol=1e-3, atol=1e-4)

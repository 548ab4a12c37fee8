"""A 1-process torchrun with the NCCL backend: DDP (bucketed NCCL all-reduce of the gradients,
broadcast of the weights) on CUDA gives the plain run's weights, and its checkpoint has no
`module.` prefix. (The pipeline itself only wraps in DDP with 2+ ranks - is_distributed - so one
GPU exercises NCCL through this script; tests/e2e/test_ddp.py covers the 2-rank pipeline on gloo.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.e2e.test_ddp import free_port

pytestmark = pytest.mark.gpu
REPO = Path(__file__).resolve().parents[2]

SCRIPT = r'''
import sys, torch, torch.distributed as dist
from recam.engine.checkpoint import save_checkpoint
from recam.engine.distributed import unwrap
from recam.models.cam_net import build_cam_net
from recam.stages.cam import bce_step

out = sys.argv[1]
dist.init_process_group("nccl")
assert dist.get_backend() == "nccl" and dist.get_world_size() == 1
device = torch.device("cuda", 0)
torch.cuda.set_device(device)
x = torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(device)
label = torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0]], device=device)
finals = {}
for wrapped in (False, True):
    torch.manual_seed(0)
    model = build_cam_net(arch="resnet18", num_classes=3, pretrained="none", fixed_bn=False).to(device)
    net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[0]) if wrapped else model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for _ in range(2):
        optimizer.zero_grad(set_to_none=True)
        bce_step(net, {"image": x, "label": label})["loss"].backward()
        optimizer.step()
    finals[wrapped] = {k: v.detach().cpu().clone() for k, v in unwrap(net).state_dict().items()}
value = torch.ones(1, device=device)
dist.all_reduce(value)
assert float(value) == 1.0
save_checkpoint(out, {"plain": finals[False], "ddp": finals[True]})
dist.destroy_process_group()
'''


def test_one_process_nccl_ddp_equals_plain_training(tmp_path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=1",
            f"--master_port={free_port()}",
            "--no-python",
            sys.executable,
            "-c",
            SCRIPT,
            str(tmp_path / "ddp.pt"),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    state = torch.load(tmp_path / "ddp.pt", map_location="cpu", weights_only=False)
    assert set(state["ddp"]) == set(state["plain"]) and not any(k.startswith("module.") for k in state["ddp"])
    for key, value in state["plain"].items():
        torch.testing.assert_close(state["ddp"][key], value, rtol=1e-5, atol=1e-6, msg=key)

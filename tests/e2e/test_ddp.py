"""torchrun with 2 CPU processes (gloo): the DDP classifier and the DDP DeepLab equal their
one-process runs, and a sharded seed export equals the one-process export."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from recam.engine.checkpoint import load_checkpoint
from recam.io import load_npz
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    """A free TCP port for the rendezvous (a fixed one collides with concurrent test runs)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_process_ddp_matches_one_process(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    prepare = RunDir(cfg.run).stage_dir("prepare")
    common = [
        "debug=tiny",
        f"run.root={tmp_path}",
        f"dataset.root={cfg.dataset.root}",
        f"+run.inputs.prepare={prepare}",
        "model.fixed_bn=true",
        "cam.batch_size=4",
        "cam.epochs=2",
        "cam.max_steps=2",
        "cam.momentum=0.9",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "recam.train",
            *common,
            "run.name=ddp",
            "stage=all",
            "stage.steps=[cam,seeds/cam]",
            f"hydra.run.dir={tmp_path}/hydra/rank" + "${oc.env:RANK,0}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "it/s" not in line)[-6000:]
    run_stage(compose_config([*common, "run.name=single", "stage=all", "stage.steps=[cam,seeds/cam]"]))

    ddp = load_checkpoint(tmp_path / "ddp" / "cam" / "model.pt")
    single = load_checkpoint(tmp_path / "single" / "cam" / "model.pt")
    assert not any(k.startswith("module.") for k in ddp["model"])
    # Float noise only: the ranks sum half-batch gradients and gloo adds them, one process sums the
    # whole batch (measured up to 1.9e-5 after 4 momentum steps, on weights of order 1e-2..1).
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=5e-5, msg=key)
    history = load_checkpoint(tmp_path / "ddp" / "cam" / "checkpoints" / "last.pt")["history"]
    single_history = load_checkpoint(tmp_path / "single" / "cam" / "checkpoints" / "last.pt")["history"]
    assert abs(history[-1]["train_loss"] - single_history[-1]["train_loss"]) < 1e-4
    # The export was sharded over the two ranks and finished once, by rank 0; it equals a
    # one-process export of the same (DDP) classifier.
    run_stage(
        compose_config(
            [
                *common,
                "run.name=single_export",
                "stage=seeds",
                "seeds.method=cam",
                f"+run.inputs.cam={tmp_path / 'ddp' / 'cam'}",
            ]
        )
    )
    seeds, reference = tmp_path / "ddp" / "seeds" / "cam", tmp_path / "single_export" / "seeds" / "cam"
    assert (seeds / "DONE").is_file()
    files = sorted(p.name for p in reference.glob("*.npz"))
    assert files and files == sorted(p.name for p in seeds.glob("*.npz"))
    for name in files:
        np.testing.assert_allclose(
            load_npz(seeds / name)["high_res"], load_npz(reference / name)["high_res"], atol=1e-6
        )


def test_two_process_seg_matches_one_process(tiny_all, tmp_path) -> None:
    """The iteration loop under DDP: global micro-batch split over the ranks, gradient accumulation
    over iter_size with no_sync, the pixel mean over the whole batch (ignored pixels differ per rank)."""
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    common = [
        "debug=tiny",
        f"run.root={tmp_path}",
        f"dataset.root={cfg.dataset.root}",
        "stage=seg",
        f"+run.inputs.prepare={rundir.stage_dir('prepare')}",
        f"+run.inputs.masks={rundir.stage_dir('masks')}",
        "seg.labels=pseudo",
        "seg.fixed_bn=true",
        "seg.iterations=2",
        "seg.batch_size=2",
        "seg.iter_size=2",
        "seg.checkpoint_every=1",
        "seg.lr=0.001",
    ]
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node=2",
            f"--master_port={free_port()}",
            "-m",
            "recam.train",
            *common,
            "run.name=ddp",
            f"hydra.run.dir={tmp_path}/hydra/rank" + "${oc.env:RANK,0}",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=600,
    )
    assert done.returncode == 0, "\n".join(line for line in done.stderr.splitlines() if "it/s" not in line)[-6000:]
    run_stage(compose_config([*common, "run.name=single"]))

    ddp = load_checkpoint(tmp_path / "ddp" / "seg" / "pseudo" / "model.pt")
    single = load_checkpoint(tmp_path / "single" / "seg" / "pseudo" / "model.pt")
    assert not any(k.startswith("module.") for k in ddp["model"])
    for key, value in single["model"].items():
        torch.testing.assert_close(ddp["model"][key], value, rtol=1e-4, atol=5e-5, msg=key)
    history = load_checkpoint(tmp_path / "ddp" / "seg" / "pseudo" / "checkpoints" / "last.pt")["history"]
    single_history = load_checkpoint(tmp_path / "single" / "seg" / "pseudo" / "checkpoints" / "last.pt")["history"]
    assert [h["iteration"] for h in history] == [h["iteration"] for h in single_history]
    for ours, theirs in zip(history, single_history):
        assert abs(ours["loss"] - theirs["loss"]) < 1e-4

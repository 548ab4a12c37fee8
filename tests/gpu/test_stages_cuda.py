"""Every stage of the plan on tiny data on CUDA, with autocast off and on and in channels_last;
the CUDA run's seeds and masks against a CPU run of the same weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recam.io import load_label_png, load_npz
from recam.pipeline import RunDir, run_stage
from tests.conftest import compose_config

pytestmark = pytest.mark.gpu


@pytest.mark.parametrize(
    "variant",
    [
        ["runtime.amp=false", "runtime.channels_last=false"],
        ["runtime.amp=true", "runtime.channels_last=true"],
        ["runtime=fast"],
    ],
    ids=["fp32", "amp_channels_last", "fast_preset"],
)
def test_every_stage_runs_on_cuda(gpu_run, variant) -> None:
    name = "cuda_" + "_".join(v.replace("=", "-").replace(".", "-") for v in variant)
    cfg = compose_config([*gpu_run, *variant, f"run.name={name}", "stage=all"])
    results = run_stage(cfg)
    root = Path(cfg.run.root) / cfg.run.name
    steps = [label for label in results if label != "report"]  # one label per plan step: "seeds/cam", ...
    assert len(steps) >= 17, steps
    for label in steps:  # a step's label is its folder (stage or stage/method)
        assert (root / label / "DONE").is_file(), (variant, label)
    seeds = json.loads((root / "seeds" / "recam" / "results.json").read_text())
    assert seeds["images"] > 0 and seeds["peak_memory_mb"] > 0  # PeakMemory on CUDA: the allocator's peak
    assert 0.0 <= results["eval_seeds/recam"]["miou"] <= 1.0


def test_cuda_seeds_and_masks_equal_the_cpu_ones(gpu_run) -> None:
    """Same classifier and IRN (trained on CUDA in fp32): the CPU export of seeds and walk masks
    from those weights equals the CUDA one to float noise."""
    cuda_cfg = compose_config(
        [
            *gpu_run,
            "run.name=cuda_vs_cpu",
            "runtime.amp=false",
            "runtime.tf32=false",
            "stage=all",
            "stage.steps=[prepare,cam,recam,seeds/recam,ir_labels,irn,masks/irn]",
        ]
    )
    run_stage(cuda_cfg)
    cuda = RunDir(cuda_cfg.run)
    inputs = [f"+run.inputs.{stage}={cuda.stage_dir(stage)}" for stage in ("prepare", "cam", "recam", "irn")]
    seeds_cpu = compose_config(
        [*gpu_run, "runtime.device=cpu", "run.name=cpu_export", *inputs, "stage=seeds", "seeds.method=recam"]
    )
    run_stage(seeds_cpu)
    cpu = RunDir(seeds_cpu.run)
    files = sorted(p.name for p in cuda.stage_dir("seeds", "recam").glob("*.npz"))
    assert files
    for name in files:
        ours, theirs = (
            load_npz(cuda.stage_dir("seeds", "recam") / name),
            load_npz(cpu.stage_dir("seeds", "recam") / name),
        )
        np.testing.assert_array_equal(ours["keys"], theirs["keys"])
        np.testing.assert_allclose(ours["cam"], theirs["cam"], atol=1e-4)
    masks_cpu = compose_config(
        [
            *gpu_run,
            "runtime.device=cpu",
            "run.name=cpu_export",
            *inputs,
            f"+run.inputs.seeds={cuda.stage_dir('seeds')}",
            f"+run.inputs.ir_labels={cuda.stage_dir('ir_labels')}",
            "stage=masks",
            "masks.method=irn",
        ]
    )
    run_stage(masks_cpu)
    folder_cuda, folder_cpu = cuda.stage_dir("masks", "irn"), cpu.stage_dir("masks", "irn")
    pngs = sorted(p.name for p in folder_cuda.glob("*.png"))
    assert pngs
    agree = [float((load_label_png(folder_cuda / n) == load_label_png(folder_cpu / n)).mean()) for n in pngs]
    # Labels are an argmax of the walk: a pixel on a tie may flip under float noise, nothing more.
    assert min(agree) > 0.99, agree

"""The stage table and the one place with side effects on the runtime (the top of the import graph).

`run_stage(cfg)` sets up the runtime once (seed, device, cudnn/TF32, threads) and dispatches
through `STAGES`, a dict in plain sight. `stage=all` walks `PLAN` and skips every step whose
recorded config and upstream fingerprints are unchanged.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable

import torch

from recam.config import Config, RuntimeConfig
from recam.engine.distributed import alone, barrier, init_distributed, is_distributed, is_main
from recam.engine.seeding import seed_everything
from recam.errors import RecamInputError
from recam.plan import plan_steps, step_label
from recam.rundir import RunDir
from recam.validate import synthetic_consumers, validate

log = logging.getLogger(__name__)


def setup_runtime(runtime: RuntimeConfig) -> torch.device:
    """Seed every RNG, choose the device, set cudnn/TF32/threads. Called once per process."""
    seed_everything(runtime.seed)
    if runtime.threads > 0:
        torch.set_num_threads(runtime.threads)
    if runtime.device == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        device = torch.device(runtime.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RecamInputError(
                "recam: runtime.device=cuda but no CUDA device is visible - use runtime.device=auto or cpu"
            )
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = runtime.cudnn_benchmark and not runtime.deterministic
        torch.backends.cudnn.deterministic = runtime.deterministic
        torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
        torch.backends.cudnn.allow_tf32 = runtime.tf32
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = init_distributed(device)  # torchrun: join the process group, cuda:LOCAL_RANK
    log.info("device %s, seed %d, torch %s", device, runtime.seed, torch.__version__)
    return device


StageFn = Callable[[Config, RunDir, torch.device], dict]


def _stages() -> dict[str, StageFn]:
    # Imported here so that importing recam.pipeline stays cheap and side-effect free.
    from recam.stages import pretrain
    from recam.stages import cam, eval_masks, eval_seeds, ir_labels, irn, masks, prepare, recam, report, seeds, summary
    from recam.stages import eval_seg, seg
    from recam.stages import cam_methods, visualize
    from recam.stages import eval_loc, spg, wsol

    return {
        "prepare": prepare.run,
        "pretrain": pretrain.run,
        "cam": cam.run,
        "recam": recam.run,
        "seeds": seeds.run,
        "eval_seeds": eval_seeds.run,
        "ir_labels": ir_labels.run,
        "irn": irn.run,
        "masks": masks.run,
        "eval_masks": eval_masks.run,
        "report": report.run,
        "summary": summary.run,
        "seg": seg.run,
        "eval_seg": eval_seg.run,
        "visualize": visualize.run,
        "cam_methods": cam_methods.run,
        "spg": spg.run,
        "eval_loc": eval_loc.run,
        "wsol": wsol.run,
    }


# Under torchrun these run on every rank (training splits batches, exports split images); the
# others run on rank 0 while the rest wait.
DISTRIBUTED_STAGES = {"cam", "recam", "irn", "seg", "seeds", "masks"}
# Stages whose ranks each export a shard: rank 0 runs them once more after the others finish, which
# finds nothing left to do and writes DONE.
SHARDED_STAGES = {"seeds", "masks"}


def call_stage(stages: dict[str, StageFn], name: str, cfg: Config, device: torch.device) -> dict:
    """One stage in this process, or across the torchrun ranks (see DISTRIBUTED_STAGES)."""
    if not is_distributed():
        return _call(stages[name], cfg, device)
    results = {}
    if name in DISTRIBUTED_STAGES:
        results = _call(stages[name], cfg, device)
    elif is_main():
        with alone():  # no collective call inside: the other ranks wait at the barrier below
            results = _call(stages[name], cfg, device)
    barrier()
    if name in SHARDED_STAGES and is_main():
        with alone():
            results = _call(stages[name], cfg, device)
    barrier()
    return results


def _call(stage: StageFn, cfg: Config, device: torch.device) -> dict:
    """One stage call with its own RunDir, whose locks are released however the stage ends."""
    rundir = RunDir(cfg.run)
    try:
        return stage(cfg, rundir, device)
    finally:
        rundir.close()


def with_stage_overrides(cfg: Config, stage: str, overrides: dict) -> Config:
    if not overrides:
        return cfg
    return dataclasses.replace(cfg, **{stage: dataclasses.replace(getattr(cfg, stage), **overrides)})


def run_stage(cfg: Config) -> dict:
    """Run `cfg.stage.name` (or the steps of PLAN for `all`); returns the stage results."""
    stages = _stages()
    name = cfg.stage.name
    if name != "all" and name not in stages:
        raise RecamInputError(f"recam: unknown stage {name!r}; choose one of {', '.join(['all', *stages])}")
    for warning in validate(cfg):  # every value checked before any folder is touched
        log.warning("%s", warning)
    from recam.stages.pretrain import cache_folder

    # The pretrain stage's folder is the shared cache under data/, keyed by its settings (unless
    # run.inputs.pretrain names another): `require("pretrain")` and the plan find it there.
    if "pretrain" not in cfg.run.inputs:  # a copy: the caller's config is left as it was
        inputs = {**cfg.run.inputs, "pretrain": str(cache_folder(cfg))}
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, inputs=inputs))
    device = setup_runtime(cfg.runtime)
    if name != "all":
        return call_stage(stages, name, cfg, device)
    results = {}
    for step, overrides in plan_steps(cfg.stage.steps, cfg.dataset.name, bool(synthetic_consumers(cfg))):
        step_cfg = with_stage_overrides(cfg, step, overrides)
        label = step_label(step, overrides)
        log.info("== %s ==", label)
        started = time.time()
        seed_everything(cfg.runtime.seed)
        results[label] = call_stage(stages, step, step_cfg, device)
        log.info("%s took %.1f s", label, time.time() - started)
    results["report"] = call_stage(stages, "report", cfg, device)
    return results

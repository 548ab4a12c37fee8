"""The stage table, the run-directory contract, and the one place with side effects on the runtime.

`run_stage(cfg)` sets up the runtime once (seed, device, cudnn/TF32, threads) and dispatches
through `STAGES`, a dict in plain sight. `stage=all` walks `PLAN` and skips every step whose
recorded config and upstream fingerprints are unchanged.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recam.config import Config, RunConfig, RuntimeConfig
from recam.engine.distributed import alone, barrier, init_distributed, is_distributed, is_main
from recam.errors import RecamInputError
from recam.io import fingerprint, read_json, update_json, write_json, write_text

log = logging.getLogger(__name__)

@dataclass
class RunDir:
    """Paths of one experiment's artifacts: `<root>/<name>/<stage>[/<method>]`.

    Every stage asks this object for its own folder and for its inputs; nothing else builds
    these paths. `inputs` (run.inputs) redirects an upstream stage to another folder, e.g. to share
    one `cam` checkpoint across a sweep. `require()` records each upstream DONE fingerprint, which
    `finish()` writes as `inputs.json`.
    """
    run: RunConfig
    used_inputs: dict[str, str] = field(default_factory=dict)
    created: float = field(default_factory=time.time)   # one RunDir per stage call: its start time

    @property
    def root(self) -> Path:
        return Path(self.run.root) / self.run.name

    @property
    def summary_path(self) -> Path:
        return self.root / "summary.json"

    def stage_dir(self, stage: str, method: str | None = None) -> Path:
        base = Path(self.run.inputs[stage]) if stage in self.run.inputs else self.root / stage
        return base / method if method else base

    def require(self, stage: str, method: str | None = None) -> Path:
        """The folder of a finished upstream stage, or one clear error naming the stage to run."""
        path = self.stage_dir(stage, method)
        done = path / "DONE"
        if not done.is_file():
            what = f"stage={stage}" + (f" {stage}.method={method}" if method else "")
            raise RecamInputError(
                f"recam: {path} is not finished (no DONE file) - run `{what}` for experiment "
                f"run.name={self.run.name} first (make {stage} EXP=...)")
        self.used_inputs[str(done)] = fingerprint(done)
        return path

    @staticmethod
    def is_done(path: Path) -> bool:
        return (path / "DONE").is_file()

    def finish(self, path: Path, config_slice: dict, results: dict | None = None,
               table: str | None = None) -> None:
        """Write config.yaml-equivalent JSON, inputs.json, results.{json,md}, then DONE (last).
        Under torchrun only rank 0 writes."""
        if not is_main():
            return
        write_json(path / "config.json", config_slice)
        write_json(path / "inputs.json", self.used_inputs)
        if results is not None:
            write_json(path / "results.json", results)
        if table is not None:
            write_text(path / "results.md", table)
        write_json(path / "DONE", {"finished": time.strftime("%Y-%m-%d %H:%M:%S"),
                                   "seconds": round(time.time() - self.created, 1),
                                   "key": stage_key(config_slice, self.used_inputs)})

    def add_summary(self, key: str, entry: dict) -> None:
        """Add `<eval stage>/<method>` -> {miou, threshold, ...} to the experiment's summary.json."""
        if not is_main():
            return
        update_json(self.summary_path, {key: entry})


def stage_key(config_slice: dict, inputs: dict) -> str:
    """Hash of a stage's config slice and its upstream DONE fingerprints (not their paths, so a
    copied or moved run directory keeps its keys)."""
    blob = json.dumps({"config": config_slice, "inputs": sorted(inputs.values())}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def is_up_to_date(path: Path, config_slice: dict, inputs: dict) -> bool:
    """DONE exists and was made from this config slice and these upstream DONE fingerprints
    (`inputs`: what `RunDir.require` recorded in this run)."""
    if not (path / "DONE").is_file():
        return False
    return read_json(path / "DONE").get("key") == stage_key(config_slice, inputs)


def config_slice(cfg: Config, *sections: str) -> dict:
    """The parts of the config a stage depends on, as plain JSON-able data."""
    out = {}
    for name in sections:
        value: Any = cfg
        for part in name.split("."):
            value = getattr(value, part)
        out[name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
    return out


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch. Done before every stage, so a stage's random initialisation
    (e.g. the ReCAM predictor) does not depend on which stages ran before it in the same process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


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
            raise RecamInputError("recam: runtime.device=cuda but no CUDA device is visible - use runtime.device=auto or cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = runtime.cudnn_benchmark and not runtime.deterministic
        torch.backends.cudnn.deterministic = runtime.deterministic
        torch.backends.cuda.matmul.allow_tf32 = runtime.tf32
        torch.backends.cudnn.allow_tf32 = runtime.tf32
    if runtime.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    device = init_distributed(device)   # torchrun: join the process group, cuda:LOCAL_RANK
    log.info("device %s, seed %d, torch %s", device, runtime.seed, torch.__version__)
    return device


StageFn = Callable[[Config, RunDir, torch.device], dict]


def _stages() -> dict[str, StageFn]:
    # Imported here so that importing recam.pipeline stays cheap and side-effect free.
    from recam.stages import cam, eval_masks, eval_seeds, ir_labels, irn, masks, prepare, recam, report, seeds, summary
    from recam.stages import eval_seg, seg
    from recam.stages import cam_methods, visualize
    from recam.stages import eval_loc, spg, wsol
    return {"prepare": prepare.run, "cam": cam.run, "recam": recam.run, "seeds": seeds.run,
            "eval_seeds": eval_seeds.run, "ir_labels": ir_labels.run, "irn": irn.run, "masks": masks.run,
            "eval_masks": eval_masks.run, "report": report.run, "summary": summary.run,
            "seg": seg.run,
            "eval_seg": eval_seg.run,
            "visualize": visualize.run, "cam_methods": cam_methods.run,
            "spg": spg.run, "eval_loc": eval_loc.run, "wsol": wsol.run}


# `stage=all`: the steps of one experiment, in order, with the per-step overrides of the stage slice.
PLAN: list[tuple[str, dict]] = [
    ("prepare", {}),
    ("cam", {}),
    ("seeds", {"method": "cam"}),
    ("eval_seeds", {"method": "cam"}),
    ("eval_loc", {"method": "cam"}),
    ("recam", {}),
    ("seeds", {"method": "recam"}),
    ("eval_seeds", {"method": "recam"}),
    ("eval_loc", {"method": "recam"}),
    ("ir_labels", {}),
    ("irn", {}),
    ("masks", {"method": "crf"}),
    ("eval_masks", {"method": "crf"}),
    ("masks", {"method": "irn"}),
    ("eval_masks", {"method": "irn"}),
    ("seg", {"labels": "pseudo"}),
    ("eval_seg", {"labels": "pseudo"}),
    ("seg", {"labels": "gt"}),
    ("eval_seg", {"labels": "gt"}),
    ("visualize", {}),
]


def step_label(step: str, overrides: dict) -> str:
    """`seeds/cam`: the stage name, then the values of its plan overrides (its method)."""
    return "/".join([step, *(str(v) for v in overrides.values())])


def step_folder(rundir: RunDir, step: str, overrides: dict) -> Path:
    """The artifact folder of a plan step (`<stage>/<method>` or `<stage>`)."""
    return rundir.stage_dir(step, next(iter(overrides.values()), None))


def plan_steps(selected: list[str]) -> list[tuple[str, dict]]:
    """PLAN, or the steps of it named in `selected` (stage.steps), in plan order."""
    if not selected:
        return PLAN
    labels = [step_label(step, overrides) for step, overrides in PLAN]
    unknown = [s for s in selected if s not in labels]
    if unknown:
        raise RecamInputError(f"recam: stage.steps names {unknown}, not steps of the plan: {', '.join(labels)}")
    return [entry for entry, label in zip(PLAN, labels) if label in selected]


# Under torchrun these run on every rank (training splits batches, exports split images); the
# others run on rank 0 while the rest wait.
DISTRIBUTED_STAGES = {"cam", "recam", "irn", "seg", "seeds", "masks"}
# Stages whose ranks each export a shard: rank 0 runs them once more after the others finish, which
# finds nothing left to do and writes DONE.
SHARDED_STAGES = {"seeds", "masks"}


def call_stage(stages: dict[str, StageFn], name: str, cfg: Config, device: torch.device) -> dict:
    """One stage in this process, or across the torchrun ranks (see DISTRIBUTED_STAGES)."""
    if not is_distributed():
        return stages[name](cfg, RunDir(cfg.run), device)
    results = {}
    if name in DISTRIBUTED_STAGES:
        results = stages[name](cfg, RunDir(cfg.run), device)
    elif is_main():
        with alone():   # no collective call inside: the other ranks wait at the barrier below
            results = stages[name](cfg, RunDir(cfg.run), device)
    barrier()
    if name in SHARDED_STAGES and is_main():
        with alone():
            results = stages[name](cfg, RunDir(cfg.run), device)
    barrier()
    return results


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
    plan_steps(cfg.stage.steps)  # a misspelt step fails before anything runs
    device = setup_runtime(cfg.runtime)
    if name != "all":
        return call_stage(stages, name, cfg, device)
    results = {}
    for step, overrides in plan_steps(cfg.stage.steps):
        step_cfg = with_stage_overrides(cfg, step, overrides)
        label = step_label(step, overrides)
        log.info("== %s ==", label)
        started = time.time()
        seed_everything(cfg.runtime.seed)
        results[label] = call_stage(stages, step, step_cfg, device)
        log.info("%s took %.1f s", label, time.time() - started)
    results["report"] = call_stage(stages, "report", cfg, device)
    return results

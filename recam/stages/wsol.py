"""Stage `wsol` (`make wsol`): CAM, ReCAM, SPG and the CAM family as localizers, one table.

Runs what is missing, reusing the run's finished stages (the demo's `cam`, `recam` and their
seeds): `spg` -> seeds/spg -> eval_seeds/spg -> eval_loc/spg in this run, eval_loc/cam and
eval_loc/recam, then the CAM-family methods (`wsol.family`) as a nested experiment in this stage's
folder on a subset (as `cam_methods` does: `wsol.split`, its first `max_images`, `wsol.scales`):

    <run>/wsol/  seeds/<m>/  eval_seeds/<m>/  eval_loc/<m>/  summary.json  results.{json,md}  DONE

The table: seed mIoU at the best background threshold, GT-known loc at the best tau (and top-1
loc where class scores exist: SPG) and MaxBoxAccV2, per method; it is printed and written to
results.md. Each step skips itself when up to date, so an interrupted `make wsol` resumes.
"""

from __future__ import annotations

import dataclasses
import logging

import torch

from recam.cams.methods import TITLES
from recam.config import Config, RunConfig
from recam.errors import RecamInputError
from recam.io import markdown_table, read_json
from recam.rundir import RunDir, config_slice
from recam.stages import cam_methods, eval_loc, eval_seeds, seeds, spg
from recam.engine.seeding import seed_everything

log = logging.getLogger(__name__)

MAIN_METHODS = ("cam", "recam", "spg")


def step_config(cfg: Config, method: str, run: RunConfig | None = None, family: bool = False) -> Config:
    """The config of one method's seeds / eval_seeds / eval_loc (family methods: on the subset)."""
    if not family:
        return dataclasses.replace(
            cfg,
            seeds=dataclasses.replace(cfg.seeds, method=method),
            eval_seeds=dataclasses.replace(cfg.eval_seeds, method=method),
            eval_loc=dataclasses.replace(cfg.eval_loc, method=method),
        )
    subset = cam_methods.method_config(cfg, method, run, cfg.wsol)  # the CAM-methods sweep's subset rule
    return dataclasses.replace(subset, eval_loc=dataclasses.replace(cfg.eval_loc, method=method, split=cfg.wsol.split))


def row(rundir: RunDir, method: str) -> dict:
    scored = read_json(rundir.stage_dir("eval_seeds", method) / "results.json")
    located = read_json(rundir.stage_dir("eval_loc", method) / "results.json")
    return {
        "miou": scored["miou"],
        "seed_threshold": scored["threshold"],
        "gt_known_loc": located["gt_known_loc"],
        "tau": located["threshold"],
        "top1_loc": located.get("top1_loc"),
        "maxboxacc_v2": located["maxboxacc_v2"],
        "images": located["images"],
    }


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.wsol
    unknown = [m for m in stage.family if m not in seeds.METHODS or m in MAIN_METHODS]
    if unknown:
        choices = ", ".join(m for m in seeds.METHODS if m not in MAIN_METHODS)
        raise RecamInputError(f"recam: wsol.family has {unknown} - choose from {choices}")
    out = rundir.stage_dir("wsol")
    # the main methods' steps run in the parent run, each skipping itself when up to date
    for method in MAIN_METHODS:
        method_cfg = step_config(cfg, method)
        steps = ([spg] if method == "spg" else []) + [seeds, eval_seeds, eval_loc]
        for step in steps:
            seed_everything(cfg.runtime.seed)
            step.run(method_cfg, RunDir(cfg.run), device)
    for method in MAIN_METHODS:
        rundir.require("eval_seeds", method)
        rundir.require("eval_loc", method)
    inputs = {"prepare": str(rundir.require("prepare")), "cam": str(rundir.require("cam"))}
    slice_ = config_slice(cfg, "dataset", "model", "seeds", "eval_seeds", "eval_loc", "wsol")
    for name in ("seeds", "eval_seeds", "eval_loc"):
        slice_[name] = {
            k: v for k, v in slice_[name].items() if k not in ("method", "threshold", "num_shards", "shard_index")
        }
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        print("\n" + (out / "results.md").read_text())
        return done
    nested = RunConfig(name=out.name, root=str(out.parent), inputs=inputs)
    for method in stage.family:
        method_cfg = step_config(cfg, method, nested, family=True)
        for step in (seeds, eval_seeds, eval_loc):
            seed_everything(cfg.runtime.seed)
            step.run(method_cfg, RunDir(nested), device)
    records = {m: row(rundir, m) for m in MAIN_METHODS}
    records.update({m: {**row(RunDir(nested), m), "subset": True} for m in stage.family})
    titles = {**TITLES, "recam": "ReCAM", "spg": "SPG"}

    def pct(value):
        return "-" if value is None else f"{100 * value:.1f}"

    rows = [
        [
            titles.get(m, m) + (" *" if r.get("subset") else ""),
            pct(r["miou"]),
            f"{r['seed_threshold']:.2f}",
            pct(r["gt_known_loc"]),
            f"{r['tau']:.2f}",
            pct(r["top1_loc"]),
            pct(r["maxboxacc_v2"]),
            r["images"],
        ]
        for m, r in records.items()
    ]
    split = cfg.eval_loc.split
    table = (
        f"# WSOL: seeds and boxes ({cfg.run.name})\n\n"
        f"Seed mIoU at the best background threshold; GT-known loc (box of the largest 8-connected component of "
        f"map > tau * max, devkit IoU >= 0.5 with a GT box of the class) at the best tau; top-1 loc where the "
        f"method has class scores (SPG); MaxBoxAccV2 (IoU 0.3/0.5/0.7, any component). Split {split}; "
        f"* = CAM family on the first {stage.max_images} images, scales {list(stage.scales)}.\n\n"
        + markdown_table(
            ["method", "seed mIoU %", "best t", "GT-known loc %", "best tau", "top-1 loc %", "MaxBoxAccV2 %", "images"],
            rows,
        )
    )
    results = {"methods": records, "split": split}
    rundir.finish(out, slice_, results, table)
    print("\n" + table)
    return results

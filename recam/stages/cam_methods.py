"""Stage `cam_methods` (`make sweep-cam-methods`): every CAM method's seeds, one table.

For each of `cam_methods.methods` it runs `seeds` and `eval_seeds` with `seeds.method=<m>` - the
same `cam` classifier, the same flip + multi-scale fusion, the same evaluation - on a subset
(`cam_methods.split`, its first `max_images` ids, `cam_methods.scales`) so the whole sweep takes
minutes on a CPU. Those runs form a nested experiment in this stage's folder:

    <run>/cam_methods/  seeds/<m>/  eval_seeds/<m>/  summary.json  results.{json,md}  DONE

reading `prepare` and `cam` from the parent run. Stages already done there are skipped, so an
interrupted sweep resumes. The table: seed mIoU at each method's best threshold (and at the fixed
0.15), seconds per image and peak memory of the export (`recam.engine.memory.PeakMemory`).
"""

from __future__ import annotations

import dataclasses
from typing import Any
import logging

import torch

from recam.cams.methods import TITLES
from recam.config import Config, RunConfig
from recam.errors import RecamInputError
from recam.io import markdown_table, read_json
from recam.engine.seeding import seed_everything
from recam.rundir import RunDir, config_slice
from recam.stages import eval_seeds, seeds

log = logging.getLogger(__name__)


def method_config(cfg: Config, method: str, run: RunConfig, subset: Any = None) -> Config:
    """The config of one method's seeds + eval_seeds inside the sweep, on the subset that `subset`
    names (split, max_images, scales, top_k, n_samples: cam_methods, or wsol's family run)."""
    stage = cfg.cam_methods if subset is None else subset
    limits = [n for n in (cfg.dataset.max_images, stage.max_images) if n]
    return dataclasses.replace(
        cfg,
        run=run,
        dataset=dataclasses.replace(cfg.dataset, max_images=min(limits) if limits else None),
        seeds=dataclasses.replace(
            cfg.seeds,
            method=method,
            split=stage.split,
            scales=list(stage.scales),
            top_k=stage.top_k,
            n_samples=stage.n_samples,
        ),
        eval_seeds=dataclasses.replace(cfg.eval_seeds, method=method, split=stage.split, threshold=None),
    )


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.cam_methods
    unknown = [m for m in stage.methods if m not in seeds.METHODS or m == "recam"]
    if unknown or not stage.methods:
        choices = ", ".join(m for m in seeds.METHODS if m != "recam")
        raise RecamInputError(f"recam: cam_methods.methods has {unknown or 'nothing'} - choose from {choices}")
    inputs = {"prepare": str(rundir.require("prepare")), "cam": str(rundir.require("cam"))}
    out = rundir.stage_dir("cam_methods")
    slice_ = config_slice(cfg, "dataset", "model", "seeds", "eval_seeds", "cam_methods")
    for name in ("seeds", "eval_seeds"):
        slice_[name] = {
            k: v for k, v in slice_[name].items() if k not in ("method", "threshold", "num_shards", "shard_index")
        }
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    nested = RunConfig(name=out.name, root=str(out.parent), inputs=inputs)
    rows, records = [], {}
    for method in stage.methods:
        method_cfg = method_config(cfg, method, nested)
        for step in (seeds, eval_seeds):
            seed_everything(cfg.runtime.seed)
            step.run(method_cfg, RunDir(nested), device)
        exported = read_json(RunDir(nested).stage_dir("seeds", method) / "results.json")
        scored = read_json(RunDir(nested).stage_dir("eval_seeds", method) / "results.json")
        records[method] = {
            "miou": scored["miou"],
            "threshold": scored["threshold"],
            "miou_fixed": scored["miou_fixed"],
            "threshold_fixed": scored["threshold_fixed"],
            "seconds_per_image": exported["seconds_per_image"],
            "peak_memory_mb": exported.get("peak_memory_mb"),
            "memory_measure": exported.get("memory_measure"),
            "images": scored["images"],
        }
        r = records[method]
        rows.append(
            [
                TITLES.get(method, method),
                f"{100 * r['miou']:.1f}",
                f"{r['threshold']:.2f}",
                f"{100 * r['miou_fixed']:.1f}",
                f"{r['seconds_per_image']:.2f}",
                f"{r['peak_memory_mb']:.0f}",
            ]
        )
    measure = next(iter(records.values()))["memory_measure"]
    images = next(iter(records.values()))["images"]
    settings = (
        f"{images} images of `{stage.split}`, scales {list(stage.scales)} + flip, top_k {stage.top_k}, "
        f"n_samples {stage.n_samples}, target layer `{cfg.seeds.target_layer}`, device {device}"
    )
    table = (
        f"# CAM methods as seed generators ({cfg.run.name})\n\n{settings}. Same `cam` classifier, "
        f"fusion and evaluation for every method.\n\n"
        + markdown_table(
            ["method", "mIoU % (best t)", "best t", "mIoU % (t=0.15)", "s / image", f"peak MiB ({measure})"], rows
        )
    )
    results = {"methods": records, "settings": settings, "split": stage.split, "images": images}
    rundir.finish(out, slice_, results, table)
    print("\n" + table)
    return results

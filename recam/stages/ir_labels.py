"""Stage `ir_labels`: confident foreground / background / unsure labels from the seeds (spec §6a).

One palette PNG per image (0 background, k+1 class k, 255 unsure), written atomically by a pool
of `num_workers` processes; images whose PNG exists are skipped, so an interrupted run resumes.
The worker count is not part of the config key: it does not change a single pixel.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from recam.config import Config
from recam.data.voc12 import image_path
from recam.engine.pool import map_jobs
from recam.errors import RecamInputError
from recam.io import markdown_table
from recam.pipeline import RunDir, config_slice
from recam.stages.common import begin_stage, load_prepared
# The worker lives in a torch-free module, so spawned workers start in a fraction of a second.
from recam.stages.crf_workers import IrLabelJob, label_image

log = logging.getLogger(__name__)

# Settings that change how fast, not what: left out of the stage key.
RUNTIME_KEYS = ("num_workers", "start_method")


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.ir_labels
    data = load_prepared(rundir, cfg.dataset)
    seeds = rundir.require("seeds", stage.seeds)
    out = rundir.stage_dir("ir_labels")
    slice_ = config_slice(cfg, "dataset", "ir_labels")
    slice_["ir_labels"] = {k: v for k, v in slice_["ir_labels"].items() if k not in RUNTIME_KEYS}
    if (done := begin_stage(rundir, out, slice_, cfg.run.force)) is not None:
        return done
    ids = data.ids(stage.split)
    jobs = [IrLabelJob(str(image_path(cfg.dataset.root, i)), str(seeds / f"{i}.npz"), str(out / f"{i}.png"),
                       stage.fg_threshold, stage.bg_threshold, stage.gt_prob)
            for i in ids if not (out / f"{i}.png").is_file()]
    missing = [j.seed for j in jobs if not Path(j.seed).is_file()]
    if missing:
        raise RecamInputError(f"recam: {len(missing)} seeds are missing in {seeds} (e.g. {missing[0]}) - export "
                              f"seeds for ir_labels.split={stage.split} (seeds.split)")
    log.info("ir_labels: %d of %d images to label with %d workers", len(jobs), len(ids), stage.num_workers)
    shares = map_jobs(label_image, jobs, num_workers=stage.num_workers, start_method=stage.start_method,
                      desc="ir_labels")
    results = {"seeds": stage.seeds, "split": stage.split, "images": len(ids), "labelled_now": len(jobs),
               "fg_threshold": stage.fg_threshold, "bg_threshold": stage.bg_threshold}
    if shares:
        results["mean_confident_fg"] = float(np.mean([s["fg"] for s in shares]))
        results["mean_unsure"] = float(np.mean([s["unsure"] for s in shares]))
    table = "# ir_labels\n\n" + markdown_table(["key", "value"], [[k, v] for k, v in results.items()])
    rundir.finish(out, slice_, results, table)
    return results

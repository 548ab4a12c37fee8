"""Stage `ir_labels`: confident foreground / background / unsure labels from the seeds (spec §6a).

One palette PNG per image (0 background, k+1 class k, 255 unsure), written atomically by a pool
of `num_workers` processes; images whose PNG exists are skipped, so an interrupted run resumes.
The worker count is not part of the config key: it does not change a single pixel.
`fg_threshold=auto` / `bg_threshold=auto`: the linked rule of spec §5.3 (t + fg_offset,
t - bg_offset) on the GT-free seed threshold t of the seeds read (recam/stages/auto_thresholds.py).
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
from recam.engine.progress import progress
from recam.io import load_label_png, markdown_table, readable
from recam.rundir import RunDir, config_slice
from recam.stages.auto_thresholds import is_auto, seed_threshold
from recam.stages.common import load_prepared
from recam.thresholds import linked_thresholds

# The worker lives in a torch-free module, so spawned workers start in a fraction of a second.
from recam.stages.crf_workers import IrLabelJob, label_image

log = logging.getLogger(__name__)

# Settings that change how fast, not what: left out of the stage key.
RUNTIME_KEYS = ("num_workers", "start_method")


def label_shares(label: np.ndarray) -> dict:
    """Pixel shares of one IR label: confident foreground and unsure."""
    return {"fg": float(((label > 0) & (label != 255)).mean()), "unsure": float((label == 255).mean())}


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.ir_labels
    data = load_prepared(rundir, cfg.dataset)
    seeds = rundir.require("seeds", stage.seeds)
    out = rundir.stage_dir("ir_labels")
    slice_ = config_slice(cfg, "dataset", "ir_labels")
    auto = {
        "fg": is_auto(stage.fg_threshold, "ir_labels.fg_threshold"),
        "bg": is_auto(stage.bg_threshold, "ir_labels.bg_threshold"),
    }
    # The offsets and the selector settings matter only to an auto threshold: kept out of the key otherwise.
    unused = (*RUNTIME_KEYS, *(() if auto["fg"] else ("fg_offset",)), *(() if auto["bg"] else ("bg_offset",)))
    slice_["ir_labels"] = {k: v for k, v in slice_["ir_labels"].items() if k not in unused}
    if any(auto.values()):
        slice_.update(config_slice(cfg, "thresholds"))
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    chosen = seed_threshold(cfg, data, seeds) if any(auto.values()) else None
    linked = linked_thresholds(chosen["threshold"], stage.fg_offset, stage.bg_offset) if chosen else {}
    fg_threshold = linked["fg"] if auto["fg"] else float(stage.fg_threshold)
    bg_threshold = linked["bg"] if auto["bg"] else float(stage.bg_threshold)
    ids = data.ids(stage.split)
    jobs = [
        IrLabelJob(
            str(image_path(cfg.dataset.root, i)),
            str(seeds / f"{i}.npz"),
            str(out / f"{i}.png"),
            fg_threshold,
            bg_threshold,
            stage.gt_prob,
        )
        for i in ids
        if not readable(out / f"{i}.png")
    ]
    missing = [j.seed for j in jobs if not Path(j.seed).is_file()]
    if missing:
        raise RecamInputError(
            f"recam: {len(missing)} seeds are missing in {seeds} (e.g. {missing[0]}) - export "
            f"seeds for ir_labels.split={stage.split} (seeds.split)"
        )
    log.info("ir_labels: %d of %d images to label with %d workers", len(jobs), len(ids), stage.num_workers)
    map_jobs(label_image, jobs, num_workers=stage.num_workers, start_method=stage.start_method, desc="ir_labels")
    # Statistics from the files, so a resumed run reports every image, not only those it made.
    shares = [
        label_shares(load_label_png(out / f"{i}.png"))
        for i in progress(ids, desc="ir_labels stats", unit="img", leave=False)
    ]
    results = {
        "seeds": stage.seeds,
        "split": stage.split,
        "images": len(ids),
        "labelled_now": len(jobs),
        "fg_threshold": fg_threshold,
        "bg_threshold": bg_threshold,
        "mean_confident_fg": float(np.mean([s["fg"] for s in shares])) if shares else 0.0,
        "mean_unsure": float(np.mean([s["unsure"] for s in shares])) if shares else 0.0,
    }
    if chosen is not None:
        results["auto"] = {**chosen, "seed_threshold": chosen["threshold"], "linked": [k for k, v in auto.items() if v]}
    table = "# ir_labels\n\n" + markdown_table(["key", "value"], [[k, v] for k, v in results.items()])
    rundir.finish(out, slice_, results, table)
    return results

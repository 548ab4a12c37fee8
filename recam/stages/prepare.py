"""Stage `prepare`: (generate the synthetic set, then) derive split lists and XML image labels."""
from __future__ import annotations

import logging

import torch

from recam.config import Config
from recam.data.splits import VOC12_SIZES, prepare_voc12
from recam.data.synthetic import generate_synthetic
from recam.io import markdown_table
from recam.rundir import RunDir, config_slice

log = logging.getLogger(__name__)


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    out = rundir.stage_dir("prepare")
    slice_ = config_slice(cfg, "dataset")
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    if cfg.dataset.name == "synthetic":
        info = generate_synthetic(cfg.dataset.root, cfg.dataset.synthetic, overwrite=cfg.prepare.overwrite)
        log.info("synthetic dataset at %s: %s", cfg.dataset.root, info)
    stats = prepare_voc12(cfg.dataset.root, out, sbd_root=cfg.dataset.sbd_root,
                          check_images=cfg.dataset.check_images, bad_images=cfg.dataset.bad_images,
                          unknown_classes=cfg.dataset.unknown_classes,
                          reference_sizes=VOC12_SIZES if cfg.dataset.name == "voc12" else None)
    rows = [[split, s["images"], f"{s['mean_labels']:.3f}" if "mean_labels" in s else "-",
             s.get("single_label", "-")] for split, s in stats["splits"].items()]
    table = "# prepare\n\n" + markdown_table(["split", "images", "labels/image", "single-label"], rows)
    rundir.finish(out, slice_, stats, table)
    return stats

"""Stage `prepare`: (generate the synthetic set, then) derive split lists and XML image labels."""
from __future__ import annotations

import logging

import torch

from recam.config import Config
from recam.data.cub import prepare_cub
from recam.data.splits import prepare_voc12
from recam.data.synthetic import generate_synthetic
from recam.errors import RecamInputError
from recam.io import markdown_table
from recam.pipeline import RunDir, config_slice
from recam.stages.common import begin_stage

log = logging.getLogger(__name__)


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    out = rundir.stage_dir("prepare")
    slice_ = config_slice(cfg, "dataset")
    if (done := begin_stage(rundir, out, slice_, cfg.run.force)) is not None:
        return done
    if cfg.dataset.name == "synthetic":
        info = generate_synthetic(cfg.dataset.root, cfg.dataset.synthetic, overwrite=cfg.prepare.overwrite)
        log.info("synthetic dataset at %s: %s", cfg.dataset.root, info)
    if cfg.dataset.name == "cub":
        if cfg.dataset.cub_root is None:
            raise RecamInputError("recam: dataset=cub needs dataset.cub_root=<the CUB_200_2011 folder> (images/, images.txt, ...)")
        stats = prepare_cub(cfg.dataset.cub_root, cfg.dataset.root, out, list_dir=cfg.dataset.spg_list_dir)
    else:
        stats = prepare_voc12(cfg.dataset.root, out, sbd_root=cfg.dataset.sbd_root,
                              check_images=cfg.dataset.check_images, bad_images=cfg.dataset.bad_images)
    rows = [[split, s["images"], f"{s['mean_labels']:.3f}" if "mean_labels" in s else "-",
             s.get("single_label", "-")] for split, s in stats["splits"].items()]
    table = "# prepare\n\n" + markdown_table(["split", "images", "labels/image", "single-label"], rows)
    rundir.finish(out, slice_, stats, table)
    return stats

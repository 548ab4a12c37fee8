"""Stage `prepare`: (generate the synthetic set, then) derive split lists and image labels.

voc12 / synthetic: lists + XML labels of the VOC devkit. coco14: GT masks, labels and lists from the
instance JSONs plus the VOC-layout view at dataset.root (recam/data/coco.py). folder: your own images
(recam/data/folder.py), also through a view at dataset.root.
"""

from __future__ import annotations

import logging

import torch

from recam.config import Config
from recam.data.cub import prepare_cub
from recam.data.coco import COCO_CLASSES, prepare_coco14
from recam.data.folder import prepare_folder
from recam.data.splits import VOC12_SIZES, drop_bad_images, find_bad_images, prepare_voc12, write_prepared
from recam.data.synthetic import generate_synthetic
from recam.errors import RecamInputError
from recam.io import markdown_table
from recam.rundir import RunDir, config_slice

log = logging.getLogger(__name__)


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    out = rundir.stage_dir("prepare")
    slice_ = config_slice(cfg, "dataset")
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    data = cfg.dataset
    if data.name in ("coco14", "folder"):
        if data.name == "coco14":
            made = prepare_coco14(
                data.coco.root,
                data.root,
                protocol=data.protocol,
                splits=data.coco.splits,
                workers=data.coco.workers,
                reference_labels=data.coco.reference_labels,
            )
            class_names = list(COCO_CLASSES)
        else:
            made = prepare_folder(data.folder, data.root)
            class_names = made["class_names"]
        bad = find_bad_images(data.root, made["ids"], data.check_images)
        splits = drop_bad_images(made["splits"], bad, data.root, data.bad_images)
        keep = [i for i, image_id in enumerate(made["ids"]) if image_id not in bad]
        stats = write_prepared(out, splits, [made["ids"][i] for i in keep], made["labels"][keep], class_names)
        stats = {
            **stats,
            "bad_images": dict(bad),
            **{k: v for k, v in made.items() if k not in ("splits", "ids", "labels", "class_names")},
        }
    elif data.name == "cub":
        if data.cub_root is None:
            raise RecamInputError(
                "recam: dataset=cub needs dataset.cub_root=<the CUB_200_2011 folder> (images/, images.txt, ...)"
            )
        stats = prepare_cub(data.cub_root, data.root, out, list_dir=data.spg_list_dir)
    else:
        if data.name == "synthetic":
            info = generate_synthetic(data.root, data.synthetic, overwrite=cfg.prepare.overwrite)
            log.info("synthetic dataset at %s: %s", data.root, info)
        stats = prepare_voc12(
            data.root,
            out,
            sbd_root=data.sbd_root,
            check_images=data.check_images,
            bad_images=data.bad_images,
            unknown_classes=data.unknown_classes,
            reference_sizes=VOC12_SIZES if data.name == "voc12" else None,
        )
    rows = [
        [
            split,
            s["images"],
            f"{s['mean_labels']:.3f}" if "mean_labels" in s else "-",
            s.get("single_label", "-"),
            s.get("no_label", "-"),
        ]
        for split, s in stats["splits"].items()
    ]
    table = "# prepare\n\n" + markdown_table(["split", "images", "labels/image", "single-label", "no label"], rows)
    rundir.finish(out, slice_, stats, table)
    return stats

"""Stage `eval_loc`: box localization of any seed method (spg-spec.md §7), from seeds/<method>/.

For each image of the split and each of its classes that has GT boxes (the XML boxes of VOC and
of the synthetic set): the class's full-resolution map `high_res` -> boxes -> devkit IoU with the
class's boxes. `simple` protocol over a sweep of tau (GT-known loc at the best tau; top-1 / top-5
loc when the seeds hold class `scores`, as SPG's do) and MaxBoxAccV2; with protocol=cam_dt_box
the headline GT-known / top-1 come from CAM's dt_box on the 8-bit map instead.

Multi-label images (VOC-layout sets) are scored per (image, class) pair. A pair's "rank" is the
number of classes *absent* from the image that score above its class, so top-1 loc means "no
absent class beats it": the usual top-1 on single-label images, and not a penalty for the other
classes present (our definition; the reference is single-label only).
"""

from __future__ import annotations

import numpy as np
import torch
from recam.engine.progress import progress

from recam.config import Config
from recam.data.wsol import voc_boxes
from recam.errors import RecamInputError
from recam.eval.localization import LocSweep, best_iou, dt_box, saved_heatmap
from recam.io import load_npz, markdown_table
from recam.rundir import RunDir, config_slice
from recam.stages.common import load_prepared

PROTOCOLS = ("simple", "cam_dt_box")


def absent_rank(scores: np.ndarray, keys: np.ndarray, k: int) -> int:
    """Number of classes not in `keys` whose score exceeds class k's."""
    absent = np.ones(len(scores), dtype=bool)
    absent[keys] = False
    return int((scores[absent] > scores[k]).sum())


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.eval_loc, cfg.dataset
    if stage.protocol not in PROTOCOLS:
        raise RecamInputError(f"recam: eval_loc.protocol={stage.protocol!r} - use one of {', '.join(PROTOCOLS)}")
    if len(stage.dt_box_thresholds) != 3:
        raise RecamInputError(
            f"recam: eval_loc.dt_box_thresholds={stage.dt_box_thresholds} needs 3 values, e.g. [20, 100, 110]"
        )
    data = load_prepared(rundir, data_cfg)
    seeds = rundir.require("seeds", stage.method)
    out = rundir.stage_dir("eval_loc", stage.method)
    slice_ = config_slice(cfg, "dataset", "eval_loc")
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    start, stop, step = stage.sweep
    thresholds = np.round(np.arange(start, stop + step / 2, step), 6)
    sweep = LocSweep(thresholds, iou_threshold=stage.iou_threshold)
    dt_known = dt_top1 = 0
    ids = data.ids(stage.split)
    has_scores = True
    for image_id in progress(ids, desc=f"eval_loc/{stage.method}", unit="img", dynamic_ncols=True):
        path = seeds / f"{image_id}.npz"
        if not path.is_file():
            raise RecamInputError(
                f"recam: no seed for {image_id} in {seeds} - export seeds for a split that "
                f"contains eval_loc.split={stage.split} (seeds.split)"
            )
        seed = load_npz(path)
        boxes = voc_boxes(data_cfg.root, image_id, data.class_names)
        scores = seed.get("scores")
        has_scores &= scores is not None
        for j, k in enumerate(seed["keys"].tolist()):
            if k not in boxes:
                continue
            score_map = seed["high_res"][j].astype(np.float32)
            rank = absent_rank(scores, seed["keys"], k) if scores is not None else None
            sweep.update(score_map, boxes[k], rank)
            if stage.protocol == "cam_dt_box":
                correct = (
                    best_iou(dt_box(saved_heatmap(score_map), stage.dt_box_thresholds), boxes[k]) >= stage.iou_threshold
                )
                dt_known += correct
                dt_top1 += bool(correct and rank is not None and rank < 1)
    res = sweep.results()
    if res["pairs"] == 0:
        raise RecamInputError(
            f"recam: no image of split {stage.split} has a GT box of its classes - eval_loc needs "
            "the dataset's XML boxes (Annotations/<id>.xml <bndbox>)"
        )
    results = {
        "method": stage.method,
        "split": stage.split,
        "images": len(ids),
        "protocol": stage.protocol,
        "pairs": res["pairs"],
        "gt_known_loc": res["gt_known_loc"],
        "threshold": res["best_threshold"],
        "maxboxacc_v2": res["maxboxacc_v2"],
        "maxboxacc_by_iou": res["maxboxacc_by_iou"],
        "loc_sweep": {f"{t:.2f}": v for t, v in zip(thresholds.tolist(), res["gt_known_loc_curve"])},
    }
    if "top1_loc" in res:
        results.update(top1_loc=res["top1_loc"], top5_loc=res["top5_loc"])
    if stage.protocol == "cam_dt_box":
        results.update(
            simple_gt_known_loc=results["gt_known_loc"],
            gt_known_loc=dt_known / res["pairs"],
            dt_box_thresholds=list(stage.dt_box_thresholds),
            threshold=None,
        )
        if has_scores:
            results.update(simple_top1_loc=results.get("top1_loc"), top1_loc=dt_top1 / res["pairs"])
    head = (
        f"# eval_loc/{stage.method} on {stage.split} ({len(ids)} images, {res['pairs']} image-class pairs, "
        f"protocol {stage.protocol})\n\n"
        f"GT-known loc {100 * results['gt_known_loc']:.2f} %"
        + (f" at best tau={results['threshold']:.2f}" if results["threshold"] is not None else "")
        + (f", top-1 loc {100 * results['top1_loc']:.2f} %" if "top1_loc" in results else "")
        + f", MaxBoxAccV2 {100 * results['maxboxacc_v2']:.2f} %\n\n"
    )
    rows = [
        [t, res["gt_known_loc_curve"][i]] + ([res["top1_loc_curve"][i]] if "top1_loc_curve" in res else [])
        for i, t in enumerate(thresholds.tolist())
    ]
    table = head + markdown_table(["tau", "GT-known loc"] + (["top-1 loc"] if "top1_loc_curve" in res else []), rows)
    entry = {k: results[k] for k in ("gt_known_loc", "threshold", "maxboxacc_v2", "split", "images", "protocol")}
    if "top1_loc" in results:
        entry["top1_loc"] = results["top1_loc"]
    rundir.finish(out, slice_, results, table, summary={f"eval_loc/{stage.method}": entry})
    return results

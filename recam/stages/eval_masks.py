"""Stage `eval_masks`: pseudo-mask mIoU against the ground truth (spec §6d, reference eval_sem_seg).

Scores the mask PNGs (255 counted as background, as the reference does) at the threshold they were
made with. For `masks/irn` with saved walk scores it also sweeps the background threshold in one
pass (the same argmax as `rw_to_label`, one confusion matrix per threshold) and reports the best;
tuning on the evaluation GT is optimistic, so the fixed-threshold figure stays beside it.
Masks made with an `auto` threshold carry their GT-free choice here (`threshold_auto`,
`selector`, `selector_score`; `gap` = oracle mIoU - mIoU at the auto t where a sweep exists).
"""

from __future__ import annotations

import numpy as np
import torch
from recam.engine.progress import progress

from recam.config import Config
from recam.data.voc12 import load_gt
from recam.errors import RecamInputError
from recam.eval.metrics import ThresholdSweep, iou_from_confusion, sem_seg_confusion
from recam.io import load_label_png, load_npz, markdown_table, read_json
from recam.masks.random_walk import upsample_walk
from recam.rundir import RunDir, config_slice
from recam.stages.common import load_prepared
from recam.stages.eval_seeds import sweep_thresholds


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.eval_masks, cfg.dataset
    data = load_prepared(rundir, data_cfg)
    masks = rundir.require("masks", stage.method)
    out = rundir.stage_dir("eval_masks", stage.method)
    slice_ = config_slice(cfg, "dataset", "eval_masks")
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    made = read_json(masks / "results.json")
    fixed = float(made["threshold"])
    num_labels = len(data.class_names) + 1
    ids = data.ids(stage.split)
    scores = [i for i in ids if (masks / f"{i}.npz").is_file()]
    sweep = None
    if ids and len(scores) == len(ids):
        sweep = ThresholdSweep(sweep_thresholds(*stage.sweep, fixed), num_labels=num_labels)
    confusion = np.zeros((num_labels, num_labels), dtype=np.int64)
    for image_id in progress(ids, desc=f"eval_masks/{stage.method}", unit="img", dynamic_ncols=True):
        path = masks / f"{image_id}.png"
        if not path.is_file():
            raise RecamInputError(
                f"recam: no pseudo mask for {image_id} in {masks} - make masks for a split that "
                f"contains eval_masks.split={stage.split} (masks.split)"
            )
        mask = load_label_png(path)
        gt = load_gt(data_cfg.root, image_id, num_classes=num_labels - 1, size=mask.shape)
        confusion += sem_seg_confusion([mask], [gt], num_labels)
        if sweep is not None:
            walk = load_npz(masks / f"{image_id}.npz")
            sweep.update(upsample_walk(torch.from_numpy(walk["rw"]), gt.shape).numpy(), walk["keys"], gt)
    names = ["background", *data.class_names]
    fixed_scores = iou_from_confusion(confusion)
    results = {
        "method": stage.method,
        "split": stage.split,
        "images": len(ids),
        "threshold_fixed": fixed,
        "miou_fixed": float(fixed_scores["miou"]),
        "iou_fixed": dict(zip(names, fixed_scores["iou"].tolist())),
        "miou": float(fixed_scores["miou"]),
        "threshold": fixed,
    }
    rows = [[n, results["iou_fixed"][n]] for n in names]
    header = ["class", f"IoU (t={fixed:.2f})"]
    if sweep is not None:
        res = sweep.results()
        results.update(
            miou=res["best_miou"],
            threshold=res["best_threshold"],
            iou_best=dict(zip(names, res["iou"][res["best_index"]].tolist())),
            sweep={f"{t:.2f}": float(m) for t, m in zip(res["thresholds"], res["miou"])},
        )
        rows = [[*row, results["iou_best"][row[0]]] for row in rows]
        header.append(f"IoU (best t={results['threshold']:.2f})")
    auto_entry = {}
    if "auto" in made:
        auto_entry = {
            "threshold_auto": fixed,
            "miou_auto": results["miou_fixed"],
            "selector": made["auto"]["selector"],
            "selector_score": made["auto"]["score"],
            "gap": results["miou"] - results["miou_fixed"] if sweep is not None else None,
        }
        results.update(auto=made["auto"], **auto_entry)
    table = (
        f"# eval_masks/{stage.method} on {stage.split} ({len(ids)} images)\n\n"
        f"mIoU {100 * results['miou_fixed']:.2f} at t={fixed:.2f}"
        + (f"; {100 * results['miou']:.2f} at the best t={results['threshold']:.2f}" if sweep else "")
        + "\n\n"
        + markdown_table(header, rows)
    )
    rundir.finish(
        out,
        slice_,
        results,
        table,
        summary={
            f"eval_masks/{stage.method}": {
                "miou": results["miou"],
                "threshold": results["threshold"],
                "miou_fixed": results["miou_fixed"],
                "threshold_fixed": fixed,
                "split": stage.split,
                "images": len(ids),
                **auto_entry,
            }
        },
    )
    return results

"""Stage `eval_seeds`: seed mIoU for a sweep of background thresholds in one pass (spec §5).

With `eval_seeds.threshold=auto` the headline threshold is chosen without ground truth
(`thresholds.selector` on a sample of the seeds, recam/thresholds) before any mask is read; the
sweep's best t (the GT oracle) stays beside it, so the gap is in results.json and summary.json.
"""

from __future__ import annotations

import numpy as np
import torch
from recam.engine.progress import progress

from recam.cams.methods import CAM_METHODS
from recam.config import Config
from recam.data.voc12 import load_gt
from recam.errors import RecamInputError
from recam.eval.metrics import ThresholdSweep, iou_from_confusion
from recam.io import load_npz, markdown_table
from recam.rundir import RunDir, config_slice
from recam.stages.auto_thresholds import is_auto, seed_threshold
from recam.stages.common import load_prepared

# Reference defaults (spec §5.2): ReCAM run_sample.py cam_eval_thres 0.21, IRN's CAM baseline 0.15.
# The CAM-family methods (gradcam, scorecam, ...) get CAM's 0.15: their maps are max-normalised the same way.
DEFAULT_THRESHOLD = {"recam": 0.21, "cam": 0.15, **dict.fromkeys(CAM_METHODS, 0.15)}
# Every method is also scored at both published values, so CAM and ReCAM seeds compare either way.
REFERENCE_THRESHOLDS = {
    "0.15": "IRN's CAM-seed threshold (also ReCAM's COCO cam_eval_thres)",
    "0.21": "ReCAM's VOC cam_eval_thres; the ReCAM repository scores its CAM seeds at it too",
}


def sweep_thresholds(start: float, stop: float, step: float, fixed: float) -> np.ndarray:
    """start..stop inclusive by step (rounded to 1e-6 so 0.21 is 0.21), plus the fixed value."""
    grid = np.round(np.arange(start, stop + step / 2, step), 6)
    return np.unique(np.append(grid, round(fixed, 6)))


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.eval_seeds, cfg.dataset
    data = load_prepared(rundir, data_cfg)
    seeds = rundir.require("seeds", stage.method)
    out = rundir.stage_dir("eval_seeds", stage.method)
    auto = is_auto(stage.threshold, "eval_seeds.threshold")
    slice_ = config_slice(cfg, "dataset", "eval_seeds", *(["thresholds"] if auto else []))
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    # The auto choice is made here, from the seeds alone, before the loop below opens any mask.
    chosen = seed_threshold(cfg, data, seeds) if auto else None
    if chosen is not None:
        fixed = chosen["threshold"]
    else:
        fixed = stage.threshold if stage.threshold is not None else DEFAULT_THRESHOLD.get(stage.method, 0.21)
    thresholds = np.unique(np.append(sweep_thresholds(*stage.sweep, fixed), [float(t) for t in REFERENCE_THRESHOLDS]))
    sweep = ThresholdSweep(thresholds, num_labels=len(data.class_names) + 1)
    ids = data.ids(stage.split)
    for image_id in progress(ids, desc=f"eval_seeds/{stage.method}", unit="img", dynamic_ncols=True):
        path = seeds / f"{image_id}.npz"
        if not path.is_file():
            raise RecamInputError(
                f"recam: no seed for {image_id} in {seeds} - export seeds for a split that "
                f"contains eval_seeds.split={stage.split} (seeds.split)"
            )
        seed = load_npz(path)
        gt = load_gt(data_cfg.root, image_id, num_classes=len(data.class_names), size=seed["high_res"].shape[1:])
        sweep.update(seed["high_res"].astype(np.float32), seed["keys"], gt)
    res = sweep.results()
    fixed_index = int(np.flatnonzero(np.isclose(thresholds, fixed))[0])
    best = res["best_index"]
    names = ["background", *data.class_names]
    fixed_scores = iou_from_confusion(res["confusion"][fixed_index])
    results = {
        "method": stage.method,
        "split": stage.split,
        "images": len(ids),
        "miou": res["best_miou"],
        "threshold": res["best_threshold"],
        "miou_fixed": float(res["miou"][fixed_index]),
        "threshold_fixed": fixed,
        "iou_best": dict(zip(names, res["iou"][best].tolist())),
        "iou_fixed": dict(zip(names, res["iou"][fixed_index].tolist())),
        "fp_fixed": dict(zip(names, fixed_scores["fp"].tolist())),
        "fn_fixed": dict(zip(names, fixed_scores["fn"].tolist())),
        "among_predfg_bg_fixed": float(res["among_predfg_bg"][fixed_index]),
        "sweep": {f"{t:.2f}": float(m) for t, m in zip(thresholds, res["miou"])},
        "miou_reference": {
            t: float(res["miou"][int(np.flatnonzero(np.isclose(thresholds, float(t)))[0])])
            for t in REFERENCE_THRESHOLDS
        },
        "reference_thresholds": REFERENCE_THRESHOLDS,
    }
    auto_entry = {}
    if chosen is not None:
        # The GT-free choice next to the oracle: gap = oracle mIoU - mIoU at the auto t (fraction).
        auto_entry = {
            "threshold_auto": fixed,
            "miou_auto": results["miou_fixed"],
            "selector": chosen["selector"],
            "selector_score": chosen["score"],
            "gap": results["miou"] - results["miou_fixed"],
        }
        results.update(auto=chosen, **auto_entry)
    table = (
        f"# eval_seeds/{stage.method} on {stage.split} ({len(ids)} images)\n\n"
        f"mIoU {100 * results['miou']:.2f} at best t={results['threshold']:.2f}; "
        f"{100 * results['miou_fixed']:.2f} at the fixed t={fixed:.2f}"
        + (f" (auto: {chosen['selector']}, score {chosen['score']:.3f}, no ground truth)" if chosen else "")
        + "\n\n"
        + "".join(f"- t={t}: {100 * m:.2f} ({REFERENCE_THRESHOLDS[t]})\n" for t, m in results["miou_reference"].items())
        + "\n"
        + markdown_table(
            ["class", "IoU (best t)", "IoU (fixed t)"],
            [[n, results["iou_best"][n], results["iou_fixed"][n]] for n in names],
        )
        + "\n"
        + markdown_table(["threshold", "mIoU"], [[t, m] for t, m in results["sweep"].items()])
    )
    rundir.finish(
        out,
        slice_,
        results,
        table,
        summary={
            f"eval_seeds/{stage.method}": {
                "miou": results["miou"],
                "threshold": results["threshold"],
                "miou_fixed": results["miou_fixed"],
                "threshold_fixed": fixed,
                "split": stage.split,
                "images": len(ids),
                "miou_0.15": results["miou_reference"]["0.15"],
                "miou_0.21": results["miou_reference"]["0.21"],
                **auto_entry,
            }
        },
    )
    return results

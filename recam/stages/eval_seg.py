"""Stage `eval_seg`: mIoU of a `seg` model on a labelled split, with and without dense CRF
(spec §7.1 "Test", "Metric", "CRF"). Predictions are kept as palette PNGs in pred/ and pred_crf/;
ones already there are reused, so an interrupted evaluation resumes."""
from __future__ import annotations

import math

import numpy as np
import torch
from tqdm import tqdm

from recam.config import Config
from recam.data.seg_dataset import check_label_values
from recam.data.transforms import normalize, to_chw
from recam.data.voc12 import load_image, load_mask, mask_path
from recam.engine.loop import autocast
from recam.eval.metrics import confusion_matrix, iou_from_confusion
from recam.io import load_label_png, markdown_table, save_label_png
from recam.pipeline import RunDir, config_slice
from recam.seg.inference import crf_labels, predict_probs
from recam.stages.common import begin_stage, load_prepared
from recam.stages.seg import load_trained


def _fraction(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, root = cfg.eval_seg, cfg.dataset.root
    data = load_prepared(rundir, cfg.dataset)
    seg_dir = rundir.require("seg", stage.labels)
    split = stage.split or cfg.dataset.val_list
    out = rundir.stage_dir("eval_seg", stage.labels)
    slice_ = config_slice(cfg, "dataset", "eval_seg")
    slice_["eval_seg"]["amp"] = amp = cfg.amp_for("eval_seg")   # the resolved precision is what changes the outputs
    if (done := begin_stage(rundir, out, slice_, cfg.run.force)) is not None:
        return done
    num_labels = len(data.class_names) + 1
    model = load_trained(seg_dir / "model.pt", data.class_names).to(device).eval()
    kinds = ["pred", "pred_crf"] if stage.crf else ["pred"]
    confusion = {kind: np.zeros((num_labels, num_labels), dtype=np.int64) for kind in kinds}
    ids = data.ids(split)
    for image_id in tqdm(ids, desc=f"eval_seg/{stage.labels}", unit="img", dynamic_ncols=True):
        gt = load_mask(root, image_id)
        check_label_values(gt, num_labels, mask_path(root, image_id))
        paths = {kind: out / kind / f"{image_id}.png" for kind in kinds}
        if all(path.is_file() for path in paths.values()):
            preds = {kind: load_label_png(path) for kind, path in paths.items()}
        else:
            image = load_image(root, image_id)
            x = torch.from_numpy(to_chw(normalize(image, cfg.dataset.mean, cfg.dataset.std)))[None].to(device)
            with autocast(device, amp):
                probs = predict_probs(model, x, scales=stage.scales, flip=stage.flip)
            preds = {"pred": probs.argmax(dim=0).to(torch.uint8).cpu().numpy()}
            if stage.crf:
                preds["pred_crf"] = crf_labels(image, probs.cpu().numpy())
            for kind, path in paths.items():
                save_label_png(path, preds[kind])
        for kind in kinds:
            confusion[kind] += confusion_matrix(gt, preds[kind], num_labels)
    names = ["background", *data.class_names]
    scores = {kind: iou_from_confusion(confusion[kind]) for kind in kinds}
    results = {"labels": stage.labels, "split": split, "images": len(ids), "scales": stage.scales,
               "flip": stage.flip, "miou": float(scores["pred"]["miou"]),
               "iou": {n: _fraction(v) for n, v in zip(names, scores["pred"]["iou"])}}
    if stage.crf:
        results["miou_crf"] = float(scores["pred_crf"]["miou"])
        results["iou_crf"] = {n: _fraction(v) for n, v in zip(names, scores["pred_crf"]["iou"])}
    crf_line = f"; with dense CRF {100 * results['miou_crf']:.2f}" if stage.crf else ""
    table = (f"# eval_seg/{stage.labels} on {split} ({len(ids)} images)\n\n"
             f"mIoU {100 * results['miou']:.2f}{crf_line}\n\n"
             + markdown_table(["class", "IoU", *(["IoU (CRF)"] if stage.crf else [])],
                              [[n, *(float(scores[k]["iou"][i]) for k in kinds)] for i, n in enumerate(names)]))
    rundir.finish(out, slice_, results, table)
    rundir.add_summary(f"eval_seg/{stage.labels}", {
        "miou": results["miou"], **({"miou_crf": results["miou_crf"]} if stage.crf else {}),
        "split": split, "images": len(ids)})
    return results

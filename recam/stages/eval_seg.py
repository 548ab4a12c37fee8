"""Stage `eval_seg`: mIoU of a `seg` model on a labelled split, with and without dense CRF
(spec §7.1 "Test", "Metric", "CRF"). Predictions are kept as palette PNGs in pred/ and pred_crf/;
ones already there are reused, so an interrupted evaluation resumes."""

from __future__ import annotations

import math

import numpy as np
import torch
from recam.engine.progress import progress

from recam.config import Config
from recam.data.transforms import normalize, to_chw
from recam.data.datasets import image_size
from recam.data.voc12 import load_gt, load_image
from recam.engine.loop import autocast
from recam.eval.metrics import confusion_matrix, iou_from_confusion
from recam.errors import RecamInputError
from recam.io import load_label_png, markdown_table, readable, save_label_png
from recam.rundir import RunDir, config_slice
from recam.seg.inference import CRF_IMAGES, crf_labels, predict_probs, reference_crf_image
from recam.stages.common import load_prepared
from recam.stages.seg import input_norm, load_trained_with_config


def _fraction(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, root = cfg.eval_seg, cfg.dataset.root
    data = load_prepared(rundir, cfg.dataset)
    seg_dir = rundir.require("seg", stage.labels)
    split = stage.split or cfg.dataset.val_list
    out = rundir.stage_dir("eval_seg", stage.labels)
    slice_ = config_slice(cfg, "dataset", "eval_seg")
    slice_["eval_seg"]["amp"] = amp = cfg.amp_for("eval_seg")  # the resolved precision is what changes the outputs
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    num_labels = len(data.class_names) + 1
    if stage.crf_image not in CRF_IMAGES:
        raise RecamInputError(f"recam: eval_seg.crf_image={stage.crf_image!r} - use one of {', '.join(CRF_IMAGES)}")
    model, model_config = load_trained_with_config(seg_dir / "model.pt", data.class_names)
    model = model.to(device).eval()
    mean, std = input_norm(model_config, cfg.dataset.mean, cfg.dataset.std)
    # pred_crf: the CRF on the image eval_seg.crf_image names; the other one is scored beside it.
    other = "reference" if stage.crf_image == "clean" else "clean"
    kinds = ["pred", "pred_crf", f"pred_crf_{other}"] if stage.crf else ["pred"]
    confusion = {kind: np.zeros((num_labels, num_labels), dtype=np.int64) for kind in kinds}
    ids = data.ids(split)
    for image_id in progress(ids, desc=f"eval_seg/{stage.labels}", unit="img", dynamic_ncols=True):
        gt = load_gt(root, image_id, num_classes=num_labels - 1, size=image_size(root, image_id))
        paths = {kind: out / kind / f"{image_id}.png" for kind in kinds}
        if all(readable(path) for path in paths.values()):  # resumed: a damaged prediction is redone
            preds = {kind: load_label_png(path) for kind, path in paths.items()}
        else:
            image = load_image(root, image_id)
            x = torch.from_numpy(to_chw(normalize(image, mean, std)))[None].to(device)
            with autocast(device, amp):
                probs = predict_probs(model, x, scales=stage.scales, flip=stage.flip)
            preds = {"pred": probs.argmax(dim=0).to(torch.uint8).cpu().numpy()}
            if stage.crf:
                crf_inputs = {"clean": image, "reference": reference_crf_image(image)}
                preds["pred_crf"] = crf_labels(crf_inputs[stage.crf_image], probs.cpu().numpy())
                preds[f"pred_crf_{other}"] = crf_labels(crf_inputs[other], probs.cpu().numpy())
            for kind, path in paths.items():
                save_label_png(path, preds[kind])
        for kind in kinds:
            confusion[kind] += confusion_matrix(gt, preds[kind], num_labels)
    names = ["background", *data.class_names]
    scores = {kind: iou_from_confusion(confusion[kind]) for kind in kinds}
    results = {
        "labels": stage.labels,
        "split": split,
        "images": len(ids),
        "scales": stage.scales,
        "flip": stage.flip,
        "miou": float(scores["pred"]["miou"]),
        "iou": {n: _fraction(v) for n, v in zip(names, scores["pred"]["iou"])},
    }
    if stage.crf:
        results["miou_crf"] = float(scores["pred_crf"]["miou"])
        results["iou_crf"] = {n: _fraction(v) for n, v in zip(names, scores["pred_crf"]["iou"])}
        results["crf_image"] = stage.crf_image
        results[f"miou_crf_{stage.crf_image}"] = results["miou_crf"]
        results[f"miou_crf_{other}"] = float(scores[f"pred_crf_{other}"]["miou"])
    crf_line = (
        (
            f"; with dense CRF {100 * results['miou_crf']:.2f} (CRF image {stage.crf_image}; "
            f"{100 * results[f'miou_crf_{other}']:.2f} with the {other} image)"
        )
        if stage.crf
        else ""
    )
    table = (
        f"# eval_seg/{stage.labels} on {split} ({len(ids)} images)\n\n"
        f"mIoU {100 * results['miou']:.2f}{crf_line}\n\n"
        + markdown_table(
            ["class", "IoU", *([f"IoU (CRF, {stage.crf_image})", f"IoU (CRF, {other})"] if stage.crf else [])],
            [[n, *(float(scores[k]["iou"][i]) for k in kinds)] for i, n in enumerate(names)],
        )
    )
    rundir.finish(
        out,
        slice_,
        results,
        table,
        summary={
            f"eval_seg/{stage.labels}": {
                "miou": results["miou"],
                **(
                    {"miou_crf": results["miou_crf"], f"miou_crf_{other}": results[f"miou_crf_{other}"]}
                    if stage.crf
                    else {}
                ),
                "split": split,
                "images": len(ids),
            }
        },
    )
    return results

"""Stage `visualize` (`make viz`): pictures of the CAM family and of the pipeline's outputs.

For `visualize.ids` (or the first `num_images` of `visualize.split`), with the `cam` classifier:

    visualize/<id>/overlays.png   per class (rows) x method (columns): JET heat map over the image
    visualize/<id>/features.png   the first channels of `feature_layer` (torchvision make_grid)
    visualize/<id>/guided.png     per class: guided backprop, deconvnet, guided Grad-CAM
    visualize/<id>/boxes.png      per seeds/<m> and class: heat map, GT boxes (green) and the `simple`
                                  box at eval_loc's best tau (red; 0.5 without eval_loc/<m>)
    visualize/<id>/labels.png     ground truth, and in the VOC palette whatever exists for the id:
                                  seeds/<m> (at eval_seeds' best threshold, else the default),
                                  masks/<m>/<id>.png, eval_seg/<labels>/**/<id>.png
    visualize/index.html          one page indexing them
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recam.cams.cam import normalize_max, resize_maps
from recam.cams.guided import deconvnet, guided_backprop, guided_grad_cam
from recam.cams.hooks import capture
from recam.cams.methods import TITLES, compute_cams
from recam.config import Config
from recam.data.datasets import multiscale_inputs, read_image
from recam.data.voc12 import annotation_path, load_mask
from recam.data.wsol import voc_boxes
from recam.eval.localization import foreground, largest_component_box
from recam.errors import RecamInputError
from recam.eval.metrics import seed_label
from recam.io import atomic_write_with, load_label_png, load_npz, read_json, write_text
from recam.rundir import RunDir, config_slice, finished_folders, is_side_folder
from recam.stages import seeds as seeds_stage
from recam.stages.common import load_prepared
from recam.stages.eval_seeds import DEFAULT_THRESHOLD
from recam.viz.grids import feature_grid, tile
from recam.viz.html import Section, index_page
from recam.viz.overlays import colorize_labels, draw_box, gradient_image, overlay, upscale

GT_COLOUR, BOX_COLOUR = (0, 255, 0), (255, 0, 0)


def save_png(path: Path, picture: np.ndarray) -> None:
    atomic_write_with(path, lambda buffer: Image.fromarray(picture).save(buffer, format="PNG"))


def label_pictures(rundir: RunDir, root: str, image_id: str) -> list[tuple[np.ndarray, str]]:
    """Ground truth plus every seed / mask / prediction found for the id, as palette pictures."""
    found = [(colorize_labels(load_mask(root, image_id)), "ground truth")]
    for folder in finished_folders(rundir.stage_dir("seeds")):
        if not (folder / f"{image_id}.npz").is_file():
            continue
        method = folder.name
        scores = rundir.stage_dir("eval_seeds", method) / "results.json"
        # An auto (GT-free) threshold, where eval_seeds chose one, is the one the pipeline uses.
        evaluated = read_json(scores) if scores.is_file() else {}
        t = evaluated.get("threshold_auto", evaluated.get("threshold", DEFAULT_THRESHOLD.get(method, 0.15)))
        seed = load_npz(folder / f"{image_id}.npz")
        found.append(
            (
                colorize_labels(seed_label(seed["high_res"].astype(np.float32), seed["keys"], t)),
                f"seeds/{method} t={t:.2f}",
            )
        )
    for stage in ("masks", "eval_seg"):
        base = rundir.stage_dir(stage)
        for path in sorted(base.glob(f"*/{image_id}.png")) + sorted(base.glob(f"*/*/{image_id}.png")):
            if any(is_side_folder(part) for part in path.relative_to(base).parents if part.name):
                continue
            found.append(
                (colorize_labels(load_label_png(path)), str(path.parent.relative_to(rundir.stage_dir(stage).parent)))
            )
    return found


def box_pictures(
    rundir: RunDir, root: str, image_id: str, rgb: np.ndarray, class_names: list[str], alpha: float
) -> list[tuple[np.ndarray, str]]:
    """Per seeds/<m> of the id and per class with GT boxes: the heat map with the GT boxes (green)
    and the `simple` box at eval_loc/<m>'s best tau (red). None for a dataset without XML boxes
    (coco14, folder)."""
    if not annotation_path(root, image_id).is_file():
        return []
    boxes = voc_boxes(root, image_id, class_names)
    found = []
    for folder in finished_folders(rundir.stage_dir("seeds")):
        path = folder / f"{image_id}.npz"
        if not path.is_file():
            continue
        method = folder.name
        scores = rundir.stage_dir("eval_loc", method) / "results.json"
        tau = read_json(scores).get("threshold") if scores.is_file() else None
        tau = 0.5 if tau is None else tau
        seed = load_npz(path)
        for j, k in enumerate(seed["keys"].tolist()):
            if k not in boxes:
                continue
            heat = seed["high_res"][j].astype(np.float32)
            picture = overlay(rgb, heat, alpha)
            for gt in boxes[k]:
                picture = draw_box(picture, gt, GT_COLOUR)
            box, _ = largest_component_box(foreground(heat, tau))
            found.append((draw_box(picture, box, BOX_COLOUR), f"{method} {class_names[k]} tau={tau:.2f}"))
    return found


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, scale = cfg.visualize, cfg.visualize.display_scale
    data = load_prepared(rundir, cfg.dataset)
    cam_cfg = dataclasses.replace(cfg, seeds=dataclasses.replace(cfg.seeds, method="cam"))
    model, _ = seeds_stage.load_seed_model(cam_cfg, rundir, len(data.class_names), data.class_names)
    out = rundir.stage_dir("visualize")
    # The label maps drawn are those of every finished masks/ and eval_seg/ folder: their DONE
    # fingerprints are inputs, so the pictures are redrawn when one of them changes, and only then.
    for drawn in ("masks", "eval_seg"):
        for folder in finished_folders(rundir.stage_dir(drawn)):
            rundir.require(drawn, folder.name)
    out, done = rundir.begin(out, config_slice(cfg, "dataset", "model", "seeds", "visualize"), cfg.run.force)
    if done is not None:
        return done
    ids = list(stage.ids) or data.ids(stage.split)[: stage.num_images]
    if unknown := [i for i in ids if i not in data.labels]:
        raise RecamInputError(f"recam: visualize.ids has ids that are not in the dataset: {unknown[:3]}")
    model = model.to(device).eval()
    options = {**seeds_stage.method_options(cfg.seeds), "top_k": stage.top_k}
    sections = []
    for image_id in ids:
        rgb = read_image(cfg.dataset.root, image_id)
        x = multiscale_inputs(rgb, [1.0], cfg.dataset.mean, cfg.dataset.std)[0].unsqueeze(0).to(device)
        keys = np.flatnonzero(data.labels[image_id] > 0).tolist()
        names = [data.class_names[k] for k in keys]
        heat = {
            m: normalize_max(
                resize_maps(compute_cams(m, model, stage.target_layer, x, keys, **options), rgb.shape[:2])
            )[0]
            .cpu()
            .numpy()
            for m in stage.methods
        }
        cells, captions = [], []
        for k, name in enumerate(names):  # one row per class: the image, then each method
            cells += [rgb] + [overlay(rgb, heat[m][k], stage.overlay_alpha) for m in stage.methods]
            captions += [name] + [TITLES[m] for m in stage.methods]
        folder = out / image_id
        save_png(
            folder / "overlays.png", tile([upscale(c, scale) for c in cells], captions, columns=1 + len(stage.methods))
        )
        with torch.no_grad(), capture(model.get_submodule(stage.feature_layer)) as features:
            model(x)
        save_png(folder / "features.png", upscale(feature_grid(features.get()[0], stage.feature_channels), scale))
        gradients = [f(model, x, keys) for f in (guided_backprop, deconvnet)]
        gradients.append(guided_grad_cam(model, stage.target_layer, x, keys))
        pictures = [gradient_image(g[0, k].cpu().numpy()) for k in range(len(keys)) for g in gradients]
        texts = [f"{kind}: {name}" for name in names for kind in ("guided backprop", "deconvnet", "guided Grad-CAM")]
        save_png(folder / "guided.png", tile([upscale(p, scale) for p in pictures], texts, columns=3))
        located = box_pictures(rundir, cfg.dataset.root, image_id, rgb, data.class_names, stage.overlay_alpha)
        if located:
            save_png(folder / "boxes.png", tile([upscale(p, scale) for p, _ in located], [t for _, t in located]))
        labels = label_pictures(rundir, cfg.dataset.root, image_id)
        save_png(folder / "labels.png", tile([upscale(p, scale) for p, _ in labels], [t for _, t in labels]))
        sections.append(
            Section(
                f"{image_id}: {', '.join(names)}",
                pictures=[
                    (f"{image_id}/overlays.png", "CAM heat maps: one row per class, one column per method"),
                    *(
                        [
                            (
                                f"{image_id}/boxes.png",
                                "boxes: GT (green) and the largest-component box at the best tau (red)",
                            )
                        ]
                        if located
                        else []
                    ),
                    (f"{image_id}/labels.png", "ground truth, seeds, masks and predictions present for this image"),
                    (f"{image_id}/guided.png", "guided backprop, deconvnet, guided Grad-CAM per class"),
                    (f"{image_id}/features.png", f"first {stage.feature_channels} channels of {stage.feature_layer}"),
                ],
            )
        )
    intro = (
        f"Run {cfg.run.name}: the `cam` classifier on {len(ids)} images of {stage.split}; methods "
        f"{', '.join(TITLES[m] for m in stage.methods)} at {stage.target_layer} (heat maps max-normalised, JET)."
    )
    write_text(out / "index.html", index_page(f"recam visualize: {cfg.run.name}", intro, sections))
    results = {"images": ids, "methods": list(stage.methods), "index": str(out / "index.html")}
    rundir.finish(out, config_slice(cfg, "dataset", "model", "seeds", "visualize"), results)
    return results

"""Stage `visualize` (`make viz`): pictures of the CAM family and of the pipeline's outputs.

For `visualize.ids` (or the first `num_images` of `visualize.split`), with the `cam` classifier:

    visualize/<id>/overlays.png   per class (rows) x method (columns): JET heat map over the image
    visualize/<id>/cam_vs_recam.png  per class (rows): the image, the `cam` classifier's seed map and
                                  the `recam` model's (computed as `seeds` exports them, each
                                  max-normalised), in JET on one colour scale drawn below; white: the
                                  class's GT outline. Skipped, with a note, while `recam` is not finished
    visualize/<id>/features.png   the first channels of `feature_layer` (torchvision make_grid)
    visualize/<id>/guided.png     per class: guided backprop, deconvnet, guided Grad-CAM
    visualize/<id>/boxes.png      per seeds/<m> and class: heat map, GT boxes (green) and the `simple`
                                  box at eval_loc's best tau (red; 0.5 without eval_loc/<m>)
    visualize/<id>/labels.png     in the VOC palette, a captioned panel per finished folder: ground truth
                                  and seeds/<m> (at eval_seeds' threshold, else the default); masks/<m>;
                                  eval_seg/<labels>/<pred kind> - grey where the folder has no file for
                                  the id (seeds and masks are made for their own split)
    visualize/legend.png          the palette: swatch, value and name of background, every class and,
                                  where a drawn map uses it, 255 (ignore)
    visualize/index.html          one page indexing them (pictures at their own size)

Text is drawn at `font_size` pixels after `display_scale`, whole: a caption wider than its panel
widens the column.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from recam.cams.cam import normalize_max, resize_maps
from recam.cams.guided import deconvnet, guided_backprop, guided_grad_cam
from recam.cams.hooks import capture
from recam.cams.methods import TITLES, compute_cams
from recam.config import Config, VisualizeStage
from recam.data.datasets import MultiScaleDataset, collate_multiscale, multiscale_inputs, read_image
from recam.data.voc12 import annotation_path, load_mask
from recam.data.wsol import voc_boxes
from recam.eval.localization import foreground, largest_component_box
from recam.errors import RecamInputError
from recam.eval.metrics import seed_label
from recam.models.cam_net import CamNet
from recam.io import atomic_write_with, load_label_png, load_npz, read_json, write_text
from recam.rundir import RunDir, config_slice, finished_folders, is_side_folder
from recam.stages import seeds as seeds_stage
from recam.stages.common import load_prepared
from recam.stages.eval_seeds import DEFAULT_THRESHOLD
from recam.viz.grids import compare_maps, feature_grid, grid, tile
from recam.viz.html import Section, index_page
from recam.viz.overlays import (
    IGNORE,
    caption,
    colorize_labels,
    draw_box,
    gradient_image,
    legend_picture,
    legend_rows,
    overlay,
    upscale,
)

log = logging.getLogger(__name__)

GT_COLOUR, BOX_COLOUR = (0, 255, 0), (255, 0, 0)


def save_png(path: Path, picture: np.ndarray) -> None:
    atomic_write_with(path, lambda buffer: Image.fromarray(picture).save(buffer, format="PNG"))


def label_rows(rundir: RunDir, ground_truth: np.ndarray, image_id: str) -> list[list[tuple[np.ndarray | None, str]]]:
    """The label maps drawn for the id, as rows of (label map (H, W) 0..255, caption): the ground
    truth and each finished seeds/<m> (at eval_seeds' threshold, else the default), then each
    finished masks/<m>, then per finished eval_seg/<labels> its predictions (pred, pred_crf, ...).
    A finished folder without a file for the id (seeds and masks are made for their own split)
    gives None: the picture shows an empty panel, so every finished method has its place."""
    first: list[tuple[np.ndarray | None, str]] = [(ground_truth, "ground truth")]
    for folder in finished_folders(rundir.stage_dir("seeds")):
        method, path = folder.name, folder / f"{image_id}.npz"
        if not path.is_file():
            first.append((None, f"seeds/{method}: not exported"))
            continue
        scores = rundir.stage_dir("eval_seeds", method) / "results.json"
        # An auto (GT-free) threshold, where eval_seeds chose one, is the one the pipeline uses.
        evaluated = read_json(scores) if scores.is_file() else {}
        t = evaluated.get("threshold_auto", evaluated.get("threshold", DEFAULT_THRESHOLD.get(method, 0.15)))
        seed = load_npz(path)
        first.append((seed_label(seed["high_res"].astype(np.float32), seed["keys"], t), f"seeds/{method} t={t:.2f}"))
    masks: list[tuple[np.ndarray | None, str]] = []
    for folder in finished_folders(rundir.stage_dir("masks")):
        path = folder / f"{image_id}.png"
        masks.append(
            (load_label_png(path), f"masks/{folder.name}")
            if path.is_file()
            else (None, f"masks/{folder.name}: not made")
        )
    rows = [first, masks]
    for folder in finished_folders(rundir.stage_dir("eval_seg")):
        paths = sorted(p for p in folder.glob(f"*/{image_id}.png") if not is_side_folder(p.parent))
        predicted = [(load_label_png(p), f"eval_seg/{folder.name}/{p.parent.name}") for p in paths]
        rows.append(predicted or [(None, f"eval_seg/{folder.name}: not predicted")])
    return [row for row in rows if row]


def labels_picture(rows: list[list[tuple[np.ndarray | None, str]]], scale: int, font_size: int) -> np.ndarray:
    """`label_rows` in the VOC palette, one caption per panel; a missing map is a light grey panel."""
    size = next(label.shape for row in rows for label, _ in row if label is not None)
    return grid(
        [
            [
                caption(
                    upscale(colorize_labels(label) if label is not None else np.full((*size, 3), 235, np.uint8), scale),
                    text,
                    font_size,
                )
                for label, text in row
            ]
            for row in rows
        ]
    )


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


# Finished folders of these stages are drawn (or set what is drawn: thresholds, taus): their DONE
# fingerprints are inputs, so the pictures are redrawn when one of them changes, and only then.
DRAWN_STAGES = ("seeds", "eval_seeds", "eval_loc", "masks", "eval_seg")


def load_recam(cfg: Config, rundir: RunDir, class_names: list[str]) -> tuple[CamNet, torch.Tensor] | None:
    """The `recam` stage's network and class-map weight, as `seeds.method=recam` loads them (so
    `seeds.checkpoint_epoch` and `seeds.use_fused_weight` apply), or None while that stage is not
    finished. Loading `require`s it: its DONE fingerprint becomes an input of the pictures."""
    if not rundir.is_done(rundir.stage_dir("recam")):
        log.info("visualize: the recam stage is not finished - no CAM vs ReCAM pictures (run stage=recam first)")
        return None
    recam_cfg = dataclasses.replace(cfg, seeds=dataclasses.replace(cfg.seeds, method="recam"))
    return seeds_stage.load_seed_model(recam_cfg, rundir, len(class_names), class_names)


def seed_maps(
    cfg: Config, model: CamNet, weight: torch.Tensor, image_id: str, label: np.ndarray, device: torch.device
) -> np.ndarray:
    """The image's full-resolution maps (K, H, W) of its classes, as `seeds` exports them
    (`export_batch`: seeds.scales, seeds.flip, max-normalised), float32."""
    dataset = MultiScaleDataset(
        cfg.dataset.root, [image_id], {image_id: label}, cfg.seeds.scales, cfg.dataset.mean, cfg.dataset.std
    )
    batch = collate_multiscale([dataset[0]])
    seeds = seeds_stage.export_batch(model, weight, batch, device, cfg.amp_for("seeds"), cfg.seeds.flip)
    return seeds[0]["high_res"].float().cpu().numpy()


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, scale, font = cfg.visualize, cfg.visualize.display_scale, cfg.visualize.font_size
    data = load_prepared(rundir, cfg.dataset)
    cam_cfg = dataclasses.replace(cfg, seeds=dataclasses.replace(cfg.seeds, method="cam"))
    model, cam_weight = seeds_stage.load_seed_model(cam_cfg, rundir, len(data.class_names), data.class_names)
    recam = load_recam(cfg, rundir, data.class_names)
    out = rundir.stage_dir("visualize")
    for drawn in DRAWN_STAGES:
        for folder in finished_folders(rundir.stage_dir(drawn)):
            rundir.require(drawn, folder.name)
    out, done = rundir.begin(out, config_slice(cfg, "dataset", "model", "seeds", "visualize"), cfg.run.force)
    if done is not None:
        return done
    ids = list(stage.ids) or data.ids(stage.split)[: stage.num_images]
    if unknown := [i for i in ids if i not in data.labels]:
        raise RecamInputError(f"recam: visualize.ids has ids that are not in the dataset: {unknown[:3]}")
    model, cam_weight = model.to(device).eval(), cam_weight.to(device)
    if recam is not None:
        recam = (recam[0].to(device).eval(), recam[1].to(device))
    options = {**seeds_stage.method_options(cfg.seeds), "top_k": stage.top_k}
    sections, compared, ignore_used = [], [], False
    for image_id in ids:
        rgb = read_image(cfg.dataset.root, image_id)
        ground_truth = load_mask(cfg.dataset.root, image_id)
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
            folder / "overlays.png",
            tile([upscale(c, scale) for c in cells], captions, columns=1 + len(stage.methods), font_size=font),
        )
        if recam is not None and keys:
            maps = {
                "CAM": seed_maps(cfg, model, cam_weight, image_id, data.labels[image_id], device),
                "ReCAM": seed_maps(cfg, *recam, image_id, data.labels[image_id], device),
            }
            masks = np.stack([ground_truth == k + 1 for k in keys])
            save_png(folder / "cam_vs_recam.png", compare_maps(rgb, maps, names, masks, scale, font))
            compared.append(image_id)
        with torch.no_grad(), capture(model.get_submodule(stage.feature_layer)) as features:
            model(x)
        save_png(folder / "features.png", upscale(feature_grid(features.get()[0], stage.feature_channels), scale))
        gradients = [f(model, x, keys) for f in (guided_backprop, deconvnet)]
        gradients.append(guided_grad_cam(model, stage.target_layer, x, keys))
        pictures = [gradient_image(g[0, k].cpu().numpy()) for k in range(len(keys)) for g in gradients]
        texts = [f"{kind}: {name}" for name in names for kind in ("guided backprop", "deconvnet", "guided Grad-CAM")]
        save_png(folder / "guided.png", tile([upscale(p, scale) for p in pictures], texts, columns=3, font_size=font))
        located = box_pictures(rundir, cfg.dataset.root, image_id, rgb, data.class_names, stage.overlay_alpha)
        if located:
            save_png(
                folder / "boxes.png",
                tile([upscale(p, scale) for p, _ in located], [t for _, t in located], font_size=font),
            )
        labels = label_rows(rundir, ground_truth, image_id)
        ignore_used |= any(label is not None and bool((label == IGNORE).any()) for row in labels for label, _ in row)
        save_png(folder / "labels.png", labels_picture(labels, scale, font))
        sections.append(image_section(image_id, names, image_id in compared, bool(located), stage))
    save_png(out / "legend.png", legend_picture(legend_rows(data.class_names, ignore_used), font))
    palette = Section(
        "Palette",
        "The label maps' colours (VOC palette): value, class name" + (", 255 = ignore." if ignore_used else "."),
        [("legend.png", "background, every class of the dataset" + (" and ignore" if ignore_used else ""))],
    )
    recam_note = (
        "CAM vs ReCAM: the seed maps of both classifiers, each max-normalised as the seeds are, on one JET scale."
        if recam is not None
        else "CAM vs ReCAM: not drawn - the recam stage is not finished (run stage=recam, then visualize again)."
    )
    intro = (
        f"Run {cfg.run.name}: the `cam` classifier on {len(ids)} images of {stage.split}; methods "
        f"{', '.join(TITLES[m] for m in stage.methods)} at {stage.target_layer} (heat maps max-normalised, JET). "
        + recam_note
    )
    write_text(out / "index.html", index_page(f"recam visualize: {cfg.run.name}", intro, [palette, *sections]))
    results = {
        "images": ids,
        "methods": list(stage.methods),
        "cam_vs_recam": compared,
        "legend": "legend.png",
        "index": str(out / "index.html"),
    }
    rundir.finish(out, config_slice(cfg, "dataset", "model", "seeds", "visualize"), results)
    return results


def image_section(image_id: str, names: list[str], compared: bool, located: bool, stage: VisualizeStage) -> Section:
    """The page's section of one image: its pictures, in reading order, with what each shows."""
    pictures = [(f"{image_id}/overlays.png", "CAM heat maps: one row per class, one column per method")]
    if compared:
        pictures.append(
            (
                f"{image_id}/cam_vs_recam.png",
                "CAM vs ReCAM per class (seed maps, each max-normalised, one colour scale; white: GT outline)",
            )
        )
    if located:
        pictures.append(
            (f"{image_id}/boxes.png", "boxes: GT (green) and the largest-component box at the best tau (red)")
        )
    pictures += [
        (f"{image_id}/labels.png", "rows: ground truth and seeds; masks; predictions (grey: none for this image)"),
        (f"{image_id}/guided.png", "guided backprop, deconvnet, guided Grad-CAM per class"),
        (f"{image_id}/features.png", f"first {stage.feature_channels} channels of {stage.feature_layer}"),
    ]
    return Section(f"{image_id}: {', '.join(names)}", pictures=pictures)

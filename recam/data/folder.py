"""Your own images as a dataset (`dataset=folder`): a folder of images, a label file, class names.

Layout under `dataset.folder.root` (names configurable, `recam.config.FolderParams`):

    images/<id>.jpg | .jpeg | .png    any size, RGB or grey
    labels.csv                        rows "id,name;name;..." (an optional header "id,labels"), or
    labels.json                       {"<id>": ["name", ...], ...}; an empty list = no class
    class_names.txt                   one foreground class per line; label value k+1 = line k
    masks/<id>.png                    optional GT: palette or index PNG, 0 background, k+1, 255 ignore
    splits/train.txt, splits/val.txt  optional id lists; else a seeded split (val_fraction, split_seed)

`prepare_folder` checks everything once (one-line errors naming the id, file and fix) and builds the
VOC-layout view at `dataset.root` (`JPEGImages/<id>.jpg` and `SegmentationClass/<id>.png` symlinks;
PIL reads a PNG behind a .jpg name by its content), so every stage reads it exactly as VOC.
"""
from __future__ import annotations

import csv
import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from recam.config import FolderParams
from recam.errors import RecamInputError
from recam.io import link_file

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
IGNORE = 255


def read_names(path: Path) -> list[str]:
    """Class names, one a line; empty lines skipped; none or a repeat is an error."""
    if not path.is_file():
        raise RecamInputError(f"recam: dataset.folder.class_names={path} does not exist - write one class name per line")
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise RecamInputError(f"recam: {path} lists no class names - write one class name per line")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise RecamInputError(f"recam: {path} repeats the class name {repeated[0]!r} - each class must appear once")
    return names


def read_label_file(path: Path) -> dict[str, list[str]]:
    """{id: [class names]} of a CSV or JSON label file (module doc); a repeated id is an error."""
    if not path.is_file():
        raise RecamInputError(f"recam: dataset.folder.labels={path} does not exist - write a CSV (id,name;name) "
                              "or a JSON {id: [names]} of image-level labels")
    if path.suffix.lower() == ".json":
        def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
            seen = [k for k, _ in pairs]
            repeated = sorted({k for k in seen if seen.count(k) > 1})
            if repeated:   # json.loads would keep the last one silently
                raise RecamInputError(f"recam: {path} repeats the id {repeated[0]!r} - give each image one entry")
            return dict(pairs)

        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_keys)
        except ValueError as err:
            raise RecamInputError(f"recam: {path} is not valid JSON ({err}) - fix the file") from err
        if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
            raise RecamInputError(f"recam: {path} must be a JSON object {{id: [class names]}}")
        return {str(k): [str(n).strip() for n in v] for k, v in data.items()}
    labels: dict[str, list[str]] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for line_no, row in enumerate(csv.reader(f), start=1):
            if not row or not row[0].strip():
                continue
            if line_no == 1 and row[0].strip().lower() == "id":
                continue   # header
            image_id = row[0].strip()
            if image_id in labels:
                raise RecamInputError(f"recam: {path} line {line_no} repeats the id {image_id!r} - give each image one row")
            cells = ";".join(row[1:])
            labels[image_id] = [n.strip() for n in cells.replace("|", ";").split(";") if n.strip()]
    return labels


def find_images(folder: Path) -> dict[str, Path]:
    """{id: file} of the images in `folder`; two files of one id (a.jpg, a.png) are an error."""
    if not folder.is_dir():
        raise RecamInputError(f"recam: dataset.folder.images={folder} is not a folder - put the images there")
    found: dict[str, Path] = {}
    for entry in sorted(os.scandir(folder), key=lambda e: e.name):
        stem, suffix = os.path.splitext(entry.name)
        if suffix.lower() not in IMAGE_SUFFIXES or entry.name.startswith("."):
            continue
        if stem in found:
            raise RecamInputError(f"recam: {folder} holds two images of the id {stem!r} ({found[stem].name}, "
                                  f"{entry.name}) - keep one")
        found[stem] = Path(entry.path)
    return found


def seeded_split(ids: list[str], val_fraction: float, seed: int) -> dict[str, list[str]]:
    """{"train", "val"}: a seeded random share `val_fraction` of `ids` (at least one) goes to val;
    both lists keep the sorted order of `ids`."""
    if not 0.0 < val_fraction < 1.0:
        raise RecamInputError(f"recam: dataset.folder.val_fraction={val_fraction} - use a value in (0, 1)")
    if len(ids) < 2:
        raise RecamInputError(f"recam: the folder has {len(ids)} labelled image(s); a train/val split needs at least 2")
    count = min(len(ids) - 1, max(1, round(val_fraction * len(ids))))
    chosen = set(np.random.default_rng(seed).permutation(len(ids))[:count].tolist())
    return {"train": [i for k, i in enumerate(ids) if k not in chosen],
            "val": [i for k, i in enumerate(ids) if k in chosen]}


def read_splits(folder: Path, known: set[str]) -> dict[str, list[str]]:
    """train.txt and val.txt of `folder`: ids must be labelled, lists disjoint and non-empty."""
    splits = {}
    for name in ("train", "val"):
        path = folder / f"{name}.txt"
        if not path.is_file():
            raise RecamInputError(f"recam: dataset.folder.splits={folder} has no {name}.txt - write one id a line, "
                                  "or unset dataset.folder.splits for a seeded split")
        ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not ids:
            raise RecamInputError(f"recam: {path} is empty - list at least one id")
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise RecamInputError(f"recam: {path} lists {unknown[0]!r}, which has no image or no label row - "
                                  "fix the list or the label file")
        splits[name] = ids
    shared = sorted(set(splits["train"]) & set(splits["val"]))
    if shared:
        raise RecamInputError(f"recam: {folder}/train.txt and val.txt both list {shared[0]!r} - a split holds each id once")
    return splits


def check_mask(path: Path, image: Path, num_classes: int) -> None:
    """A GT mask: single-channel PNG of its image's size, values in 0..K or 255."""
    try:
        with Image.open(path) as mask, Image.open(image) as picture:
            if mask.mode not in ("P", "L"):
                raise RecamInputError(f"recam: mask {path} is a {mask.mode} image - save it as a palette or "
                                      "grey index PNG (0 background, k+1 class k, 255 ignore)")
            if mask.size != picture.size:
                raise RecamInputError(f"recam: mask {path} is {mask.size[0]}x{mask.size[1]} but its image {image} is "
                                      f"{picture.size[0]}x{picture.size[1]} - masks must have their image's size")
            values = np.unique(np.asarray(mask))
    except OSError as err:
        raise RecamInputError(f"recam: mask {path} or image {image} cannot be read ({err})") from err
    bad = [int(v) for v in values if v > num_classes and v != IGNORE]
    if bad:
        raise RecamInputError(f"recam: mask {path} has the value {bad[0]}, but there are {num_classes} classes "
                              f"(values 0..{num_classes}, 255 ignore) - fix the mask or class_names")


def prepare_folder(params: FolderParams, view_root: str | os.PathLike) -> dict[str, Any]:
    """Check a folder dataset and build its VOC-layout view at `view_root` (module doc).

    Returns {"splits": {"train", "val", "train_aug" (= train)}, "ids": sorted labelled ids,
    "labels": (N, K) uint8, "class_names", "images": N, "unlabelled_images": count, "has_masks"}.
    """
    root, view_root = Path(params.root), Path(view_root)
    if not root.is_dir():
        raise RecamInputError(f"recam: dataset.folder.root={root} does not exist - point it at your dataset folder")
    class_names = read_names(root / params.class_names)
    index = {name: k for k, name in enumerate(class_names)}
    label_file = root / params.labels
    named = read_label_file(label_file)
    images = find_images(root / params.images)
    for image_id, names in named.items():
        if image_id not in images:
            raise RecamInputError(f"recam: {label_file} has a row for {image_id!r} but {root / params.images} holds no "
                                  f"{image_id}.jpg/.jpeg/.png - add the image or drop the row")
        unknown = [n for n in names if n not in index]
        if unknown:
            raise RecamInputError(f"recam: {label_file} labels {image_id!r} with {unknown[0]!r}, not a class of "
                                  f"{root / params.class_names} ({', '.join(class_names)})")
    ids = sorted(named)
    if not ids:
        raise RecamInputError(f"recam: {label_file} labels no image - add rows id,name;name")
    unlabelled = len(set(images) - set(named))
    if unlabelled:
        log.warning("%d images of %s have no row in %s and are left out", unlabelled, root / params.images, label_file)
    labels = np.zeros((len(ids), len(class_names)), dtype=np.uint8)
    for row, image_id in enumerate(ids):
        labels[row, [index[n] for n in named[image_id]]] = 1
    splits = read_splits(root / params.splits, set(ids)) if params.splits else \
        seeded_split(ids, params.val_fraction, params.split_seed)
    for folder in ("JPEGImages", "SegmentationClass"):
        (view_root / folder).mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        link_file(view_root / "JPEGImages" / f"{image_id}.jpg", images[image_id])
    if params.masks:
        mask_dir = root / params.masks
        missing = [i for i in ids if not (mask_dir / f"{i}.png").is_file()]
        if missing:
            raise RecamInputError(f"recam: dataset.folder.masks={mask_dir} has no {missing[0]}.png ({len(missing)} of "
                                  f"{len(ids)} ids without a mask) - add them, or unset dataset.folder.masks")
        for image_id in ids:
            check_mask(mask_dir / f"{image_id}.png", images[image_id], len(class_names))
            link_file(view_root / "SegmentationClass" / f"{image_id}.png", mask_dir / f"{image_id}.png")
    return {"splits": {**splits, "train_aug": splits["train"]}, "ids": ids, "labels": labels,
            "class_names": class_names, "images": len(ids), "unlabelled_images": unlabelled,
            "has_masks": bool(params.masks)}

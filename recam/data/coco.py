"""MS COCO 2014 for the pipeline (spec §11): classes, image labels, GT masks, and the `prepare` work.

The COCO root (`dataset.coco.root`, spec §11.1) holds `train2014/`, `val2014/` and
`annotations/instances_{train,val}2014.json`. `prepare_coco14` derives from it, once:

* GT masks `<coco root>/mask/<split>/<id>.png` (the reference's `annToMask.py` location and rule,
  §11.4), or `mask_coco2voc/<split>/<id>.png` for `dataset.protocol=coco2voc` (§11.9); palette PNGs
  whose indices are the class values 0..80 (no 255);
* image labels from the annotations (§11.3), keyed by image name in our `cls_labels.npz`;
* the split lists `train` (train2014), `val` (val2014) and `train_aug` (= train: the training list
  of every stage is all of train2014 on COCO, §11.6), in ascending image-id order;
* a VOC-layout view `dataset.root` of symlinks (`JPEGImages/<name>.jpg`, `SegmentationClass/<name>.png`),
  so every later stage reads COCO exactly as it reads VOC and VOC's code path stays unchanged.

Image ids of the pipeline are the image names (`COCO_train2014_000000000009`, spec §11.1), masks on
disk are keyed by the bare integer id as in the reference. The math (`image_label`, `reference_mask`,
`coco2voc_mask`) is pure; only `prepare_coco14` touches the disk.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import time
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from recam.engine.pool import map_jobs

from recam.errors import RecamInputError
from recam.io import link_file, save_label_png

log = logging.getLogger(__name__)

# The 80 used COCO category ids in ascending order (spec §11.2): label value v = rank + 1.
COCO_CATEGORY_IDS: tuple[int, ...] = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21,
    22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44,
    46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
)
COCO_CLASSES: tuple[str, ...] = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)
# The reference's "91->80" table: COCO category id -> class value 1..80 (0 = background).
CATEGORY_TO_LABEL: dict[int, int] = {cat: v for v, cat in enumerate(COCO_CATEGORY_IDS, start=1)}
PROTOCOLS = ("recam", "coco2voc")
MASK_FOLDER = {"recam": "mask", "coco2voc": "mask_coco2voc"}   # under the COCO root
# Our split names: train2014 -> train (also train_aug, the training list), val2014 -> val.
SPLIT_LISTS = {"train2014": ("train", "train_aug"), "val2014": ("val",)}
DOWNLOAD_HINT = ("download train2014.zip, val2014.zip and annotations_trainval2014.zip from cocodataset.org "
                 "and unpack them under dataset.coco.root (train2014/, val2014/, annotations/)")


def category_label(category_id: int, where: str) -> int:
    """Class value 1..80 of a COCO category id; an id outside the 80 used ones is one clear error."""
    value = CATEGORY_TO_LABEL.get(int(category_id))
    if value is None:
        raise RecamInputError(f"recam: {where} has category_id {category_id}, not one of the 80 COCO 2014 "
                              "categories (spec §11.2) - use the official instances_*2014.json")
    return value


def image_label(annotations: Iterable[dict], where: str = "an annotation") -> np.ndarray:
    """Image-level label of one image (spec §11.3): (80,) uint8, index v-1 set for the category
    of every annotation - crowd included, any segmentation type, no area threshold."""
    label = np.zeros(len(COCO_CATEGORY_IDS), dtype=np.uint8)
    for ann in annotations:
        label[category_label(ann["category_id"], where) - 1] = 1
    return label


def annotation_mask(ann: dict, height: int, width: int) -> np.ndarray:
    """Binary (H, W) uint8 mask of one annotation, decoded by pycocotools as COCO's `annToRLE`
    does: polygons rasterised and merged, uncompressed RLE converted, compressed RLE as is."""
    from pycocotools import mask as mask_utils   # imported here: only dataset=coco14 needs it

    segmentation = ann["segmentation"]
    if isinstance(segmentation, list):
        if not segmentation:
            return np.zeros((height, width), dtype=np.uint8)
        rle = mask_utils.merge(mask_utils.frPyObjects(segmentation, height, width))
    elif isinstance(segmentation.get("counts"), list):
        rle = mask_utils.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    return np.asarray(mask_utils.decode(rle), dtype=np.uint8)


def reference_mask(height: int, width: int, annotations: Sequence[dict], where: str = "an annotation") -> np.ndarray:
    """GT class mask by the reference rule (spec §11.4, `mscoco/annToMask.py`).

    (H, W) uint8 canvas of 0; the non-crowd annotations in file order each write their class value
    v on their pixels, later ones overwriting earlier ones; crowd annotations are not drawn; no 255.
    """
    canvas = np.zeros((height, width), dtype=np.uint8)
    for ann in annotations:
        if ann.get("iscrowd", 0):
            continue
        canvas[annotation_mask(ann, height, width) > 0] = category_label(ann["category_id"], where)
    return canvas


def coco2voc_mask(height: int, width: int, annotations: Sequence[dict], where: str = "an annotation") -> np.ndarray:
    """GT class mask by the coco2voc rule of later work (spec §11.9), values mapped to 1..80.

    All annotations, crowd included, sorted by the JSON `area` (smallest first, stable); the first
    writer of a pixel wins, so small objects stay on top.
    """
    canvas = np.zeros((height, width), dtype=np.uint8)
    for ann in sorted(annotations, key=lambda a: a.get("area", 0.0)):
        free = (annotation_mask(ann, height, width) > 0) & (canvas == 0)
        canvas[free] = category_label(ann["category_id"], where)
    return canvas


MASK_RULES = {"recam": reference_mask, "coco2voc": coco2voc_mask}


def image_name(file_name: str) -> str:
    """The pipeline's id of an image: its file name without extension (spec §11.1)."""
    return file_name.rsplit(".", 1)[0]


def read_instances(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise RecamInputError(f"recam: {path} does not exist - {DOWNLOAD_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            instances = json.load(f)
    except (OSError, ValueError) as err:
        raise RecamInputError(f"recam: {path} is not a readable instances JSON ({err}) - download it again") from err
    for key in ("images", "annotations"):
        if key not in instances:
            raise RecamInputError(f"recam: {path} has no '{key}' list - it is not a COCO instances file")
    return instances


def split_records(instances: dict[str, Any]) -> tuple[list[dict], dict[int, list[dict]]]:
    """(images in ascending id order, {image id: its annotations in file order}) of one JSON."""
    images = sorted(instances["images"], key=lambda image: int(image["id"]))
    ids = [int(image["id"]) for image in images]
    if len(set(ids)) != len(ids):
        raise RecamInputError("recam: the instances JSON lists an image id twice - download it again")
    per_image: dict[int, list[dict]] = {i: [] for i in ids}
    for ann in instances["annotations"]:
        image_id = int(ann["image_id"])
        if image_id not in per_image:
            raise RecamInputError(f"recam: annotation {ann.get('id')} refers to image {image_id}, which the "
                                  "instances JSON does not list - download it again")
        per_image[image_id].append(ann)
    return images, per_image


def mask_is_valid(path: Path, height: int, width: int) -> bool:
    """A mask written earlier can be kept: it opens as a single-channel PNG of the right size."""
    try:
        with Image.open(path) as image:
            return image.mode in ("P", "L") and image.size == (width, height)
    except (OSError, ValueError):
        return False


def _write_mask(task: tuple[str, int, int, list[dict], str]) -> None:
    """Render and save one GT mask (a process-pool task)."""
    path, height, width, annotations, protocol = task
    where = f"image {Path(path).stem}"
    save_label_png(path, MASK_RULES[protocol](height, width, annotations, where))


def _pool_size(workers: int, tasks: int) -> int:
    """workers > 0 as given; 0 = in this process below 200 masks, else one process per core (<= 8)."""
    if workers > 0:
        return workers
    if tasks < 200:
        return 1
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


def compare_reference_labels(path: str | os.PathLike, labels: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Compare our train2014 labels with the author's `train_labels.npy` (spec §11.3: N x 80, row i =
    the i-th image in ascending id order, values > 0 positive). Returns {"rows", "zero_rows",
    "mismatched_rows", "first_mismatches": [names]}; a file of another shape is one clear error."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: dataset.coco.reference_labels={path} does not exist - give the path of the "
                              "author's train_labels.npy, or leave it null")
    try:
        theirs = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise RecamInputError(f"recam: {path} is not a plain .npy array ({err})") from err
    if theirs.shape != labels.shape:
        raise RecamInputError(f"recam: {path} has shape {theirs.shape}, our train2014 labels {labels.shape} - "
                              "it must be the N x 80 array of the same instances_train2014.json")
    different = np.flatnonzero(((theirs > 0) != (labels > 0)).any(axis=1))
    return {"rows": int(theirs.shape[0]), "zero_rows": int((~(theirs > 0).any(axis=1)).sum()),
            "mismatched_rows": int(different.size), "first_mismatches": [names[i] for i in different[:10]]}


def prepare_coco14(coco_root: str | os.PathLike, view_root: str | os.PathLike, *, protocol: str = "recam",
                   splits: Sequence[str] = ("train2014", "val2014"), workers: int = 0,
                   reference_labels: str | os.PathLike | None = None) -> dict[str, Any]:
    """Masks, labels, lists and the VOC-layout view of a COCO 2014 root (module doc).

    Masks already on disk that open with the right size are kept (resume); the others are rendered
    in a process pool (`workers`, 0 = auto). Returns {"splits": {name: [ids]}, "ids": [ids],
    "labels": (N, 80) uint8, "images": {split: count}, "unannotated": {split: count},
    "masks_written": int, "seconds_per_mask": float}, plus "reference_labels" (the comparison of
    `compare_reference_labels`) when the author's train_labels.npy is given.
    """
    if reference_labels is not None and (protocol != "recam" or "train2014" not in splits):
        raise RecamInputError("recam: dataset.coco.reference_labels is the author's train2014 file - it needs "
                              "dataset.protocol=recam and train2014 in dataset.coco.splits")
    if protocol not in PROTOCOLS:
        raise RecamInputError(f"recam: dataset.protocol={protocol!r} - use one of {', '.join(PROTOCOLS)}")
    coco_root, view_root = Path(coco_root), Path(view_root)
    if not coco_root.is_dir():
        raise RecamInputError(f"recam: dataset.coco.root={coco_root} does not exist - {DOWNLOAD_HINT}")
    unknown = [s for s in splits if s not in SPLIT_LISTS]
    if unknown or not splits:
        raise RecamInputError(f"recam: dataset.coco.splits={list(splits)} - use a non-empty subset of {list(SPLIT_LISTS)}")
    lists: dict[str, list[str]] = {}
    ids: list[str] = []
    rows: list[np.ndarray] = []
    tasks: list[tuple[str, int, int, list[dict], str]] = []
    counts: dict[str, int] = {}
    unannotated: dict[str, int] = {}
    for folder in ("JPEGImages", "SegmentationClass"):
        (view_root / folder).mkdir(parents=True, exist_ok=True)
    for split in splits:
        images, per_image = split_records(read_instances(coco_root / "annotations" / f"instances_{split}.json"))
        folder = coco_root / split
        if not folder.is_dir():
            raise RecamInputError(f"recam: dataset.coco.root={coco_root} has no {split}/ - {DOWNLOAD_HINT}")
        present = {entry.name for entry in os.scandir(folder)}
        names = []
        for image in images:
            annotations = per_image[int(image["id"])]
            if protocol == "coco2voc" and not annotations:
                continue   # the lists of later work keep only annotated images (spec §11.9)
            if image["file_name"] not in present:
                raise RecamInputError(f"recam: {folder / image['file_name']} is missing (listed in "
                                      f"instances_{split}.json) - unpack the complete {split}.zip there")
            name = image_name(image["file_name"])
            names.append(name)
            rows.append(image_label(annotations, f"image {name}"))
            mask = coco_root / MASK_FOLDER[protocol] / split / f"{int(image['id'])}.png"
            height, width = int(image["height"]), int(image["width"])
            if not mask_is_valid(mask, height, width):
                tasks.append((str(mask), height, width, annotations, protocol))
            _link_pair(view_root, name, folder / image["file_name"], mask)
        for list_name in SPLIT_LISTS[split]:
            lists[list_name] = names
        ids += names
        counts[split] = len(names)
        unannotated[split] = sum(1 for image in images if not per_image[int(image["id"])])
    size = _pool_size(workers, len(tasks))
    # Processes, not threads: pycocotools' decoding and the numpy writes hold the GIL. The pool's
    # workers die with this process (engine/pool.py), so a killed prepare leaves no writer behind.
    started = time.time()
    map_jobs(_write_mask, tasks, num_workers=size if size > 1 else 0, start_method="spawn",
             desc=f"prepare coco14 masks ({protocol})", chunksize=16)
    elapsed = time.time() - started
    log.info("coco14: %d masks written, %d kept from an earlier run", len(tasks), len(ids) - len(tasks))
    labels = np.stack(rows) if rows else np.zeros((0, len(COCO_CATEGORY_IDS)), np.uint8)
    made = {"splits": lists, "ids": ids, "labels": labels, "images": counts, "unannotated": unannotated,
            "masks_written": len(tasks), "seconds_per_mask": round(elapsed / max(len(tasks), 1), 5)}
    if reference_labels is not None:
        train = [i for i, name in enumerate(ids) if name.startswith("COCO_train2014_")]
        made["reference_labels"] = compare_reference_labels(reference_labels, labels[train], [ids[i] for i in train])
        if made["reference_labels"]["mismatched_rows"]:
            log.warning("coco14: %d train2014 label rows differ from %s, e.g. %s", made["reference_labels"]
                        ["mismatched_rows"], reference_labels, made["reference_labels"]["first_mismatches"][:3])
    return made


def _link_pair(view_root: Path, name: str, image: Path, mask: Path) -> None:
    """The VOC-layout entries of one image: JPEGImages/<name>.jpg and SegmentationClass/<name>.png."""
    link_file(view_root / "JPEGImages" / f"{name}.jpg", image)
    link_file(view_root / "SegmentationClass" / f"{name}.png", mask)

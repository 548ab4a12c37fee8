"""PASCAL VOC 2012 devkit access: class names, id lists, XML image labels, image/mask paths.

Layout (spec §1.1): `<root>` is `VOCdevkit/VOC2012`, holding `JPEGImages/<id>.jpg`,
`Annotations/<id>.xml`, `SegmentationClass/<id>.png` and `ImageSets/Segmentation/*.txt`.
Ids are strings such as `2007_000032` everywhere; the reference parsed them as int32, which
fails on NumPy >= 1.23 (spec §9, pitfall 8), so nothing here ever converts an id to a number.
"""
from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from recam.errors import RecamInputError
from recam.io import load_label_png, load_rgb

# Label k+1 of the segmentation maps, index k of the 20-d image-label vector (spec §1.2).
VOC_CLASSES: tuple[str, ...] = (
    "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
    "train", "tvmonitor",
)

# Said once so every "the dataset is missing" message gives the same, complete advice.
DOWNLOAD_HINT = (
    "download the VOC2012 trainval tar (VOCtrainval_11-May-2012.tar) from the PASCAL VOC site "
    "(host.robots.ox.ac.uk/pascal/VOC/voc2012/) and unpack it so that dataset.root points at "
    "VOCdevkit/VOC2012, or run with dataset=synthetic"
)

# deeplab-style list lines name files ("/JPEGImages/2007_000032.jpg /SegmentationClassAug/..png");
# only these suffixes are stripped, so an id that itself contains a dot stays whole.
_FILE_SUFFIXES = (".jpg", ".jpeg", ".png", ".xml", ".mat")


def read_class_names(root: str | os.PathLike) -> list[str]:
    """Foreground class names of a dataset root, label k+1 = name k.

    `<root>/class_names.txt` (one name per line, written by our synthetic datasets) wins when
    present; a VOC devkit has none, so the 20 VOC names are returned.
    """
    path = Path(root) / "class_names.txt"
    if not path.is_file():
        return list(VOC_CLASSES)
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise RecamInputError(f"recam: {path} lists no class names - write one name per line, or delete it to use the 20 VOC classes")
    if len(set(names)) != len(names):
        raise RecamInputError(f"recam: {path} repeats a class name ({names}) - each class must appear once")
    return names


def _id_from_token(token: str) -> str:
    """The image id of a list entry: the token itself, or the file stem of a path-like token."""
    name = token.rsplit("/", 1)[-1]
    for suffix in _FILE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_id_list(path: str | os.PathLike, *, hint: str | None = None) -> list[str]:
    """Read an image-id list as strings, in file order.

    Blank lines are skipped. A line "image-path label-path" (deeplab-pytorch's SegmentationAug
    lists) gives the stem of its first token. `hint` replaces the default advice in the error
    raised for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        advice = hint or f"check that dataset.root is right ({DOWNLOAD_HINT})"
        raise RecamInputError(f"recam: id list {path} does not exist - {advice}")
    ids = []
    for line in path.read_text(encoding="utf-8").splitlines():
        tokens = line.split()
        if tokens:
            ids.append(_id_from_token(tokens[0]))
    if len(set(ids)) != len(ids):
        seen: set[str] = set()
        repeated = [i for i in ids if i in seen or seen.add(i)]
        raise RecamInputError(f"recam: id list {path} repeats {len(repeated)} ids (e.g. {repeated[0]}) - each image "
                              "may appear once; remove the repeated lines")
    return ids


def labels_from_xml(xml_path: str | os.PathLike, class_names: Sequence[str],
                    unknown: list[str] | None = None) -> np.ndarray:
    """Multi-hot image label of one VOC annotation file (spec §1.3).

    Returns (K,) uint8 with K = len(class_names): bit k is 1 when some `<object>` has a direct
    `<name>` child equal to class_names[k] after stripping whitespace. Difficult and truncated
    objects count, as in the reference. Person-layout parts (`<object><part><name>head`) and the
    `<owner><name>` of old annotations are not object names and never count; the reference took
    every `<name>` element and relied on those not being class names, which gives the same bits.
    Unknown object names set no bit (as in the reference); they are appended to `unknown` when
    a list is given, so `prepare` can name them.
    """
    xml_path = Path(xml_path)
    index = {name: k for k, name in enumerate(class_names)}
    label = np.zeros(len(class_names), dtype=np.uint8)
    try:
        tree = ET.parse(xml_path)
    except FileNotFoundError as err:
        raise RecamInputError(f"recam: annotation {xml_path} does not exist - {DOWNLOAD_HINT}") from err
    except ET.ParseError as err:
        raise RecamInputError(f"recam: annotation {xml_path} is not valid XML ({err}) - restore it from the VOC2012 trainval tar") from err
    for obj in tree.getroot().findall("object"):
        for name in obj.findall("name"):
            k = index.get((name.text or "").strip())
            if k is not None:
                label[k] = 1
            elif unknown is not None:
                unknown.append((name.text or "").strip())
    return label


def check_voc_root(
    root: str | os.PathLike,
    need: Sequence[str] = ("JPEGImages", "Annotations", "ImageSets/Segmentation"),
) -> Path:
    """Check that `root` and its sub-folders `need` exist; return `root` as a Path.

    Raises one single-line RecamInputError naming the first missing path and what to download.
    """
    root = Path(root)
    if not root.is_dir():
        raise RecamInputError(f"recam: dataset.root={root} does not exist - {DOWNLOAD_HINT}.")
    for sub in need:
        if not (root / sub).is_dir():
            raise RecamInputError(f"recam: dataset.root={root} has no {sub}/ ({root / sub}) - {DOWNLOAD_HINT}.")
    return root


def image_path(root: str | os.PathLike, image_id: str) -> Path:
    """`<root>/JPEGImages/<id>.jpg`."""
    return Path(root) / "JPEGImages" / f"{image_id}.jpg"


def mask_path(root: str | os.PathLike, image_id: str) -> Path:
    """`<root>/SegmentationClass/<id>.png`: the VOC ground truth (0 background, 1..20, 255 void)."""
    return Path(root) / "SegmentationClass" / f"{image_id}.png"


def annotation_path(root: str | os.PathLike, image_id: str) -> Path:
    """`<root>/Annotations/<id>.xml`."""
    return Path(root) / "Annotations" / f"{image_id}.xml"


def load_image(root: str | os.PathLike, image_id: str) -> np.ndarray:
    """Decode `<root>/JPEGImages/<id>.jpg` as RGB uint8 (H, W, 3)."""
    return load_rgb(image_path(root, image_id))


def load_mask(root: str | os.PathLike, image_id: str) -> np.ndarray:
    """Read `<root>/SegmentationClass/<id>.png` as raw uint8 class indices (H, W)."""
    return load_label_png(mask_path(root, image_id))


def load_gt(root: str | os.PathLike, image_id: str, *, num_classes: int,
            size: tuple[int, int] | None = None) -> np.ndarray:
    """`load_mask`, checked as every stage that reads ground truth needs it: values 0..num_classes
    (background + classes) or 255 (void), and, when `size` (H, W) is given, the image's size.
    One RecamInputError line naming the file otherwise."""
    path = mask_path(root, image_id)
    mask = load_label_png(path)
    values = np.unique(mask)
    bad = values[(values > num_classes) & (values != 255)]
    if bad.size:
        raise RecamInputError(f"recam: ground-truth mask {path} has class ids {bad[:8].tolist()} - the dataset has "
                              f"{num_classes} classes (ids 0..{num_classes}, 255 = void); fix or remove the mask")
    if size is not None and tuple(mask.shape) != tuple(size):
        raise RecamInputError(f"recam: ground-truth mask {path} is {mask.shape[0]}x{mask.shape[1]} but its image is "
                              f"{size[0]}x{size[1]} - masks must have their image's size; re-make the mask")
    return mask

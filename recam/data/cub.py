"""CUB-200-2011 as a VOC-layout folder, so every stage reads it unchanged (spg-spec.md §2.1).

`prepare` with dataset=cub builds, under dataset.root:
  JPEGImages/<id>.jpg      symlinks to <cub_root>/images/<class folder>/<id>.jpg (no copy)
  Annotations/<id>.xml     one <object> (the class folder name) with its CUB box as a 1-based bndbox
  class_names.txt          the 200 folder names, class k = folder number - 1
and the prepared lists: train (the official train split, or the SPG list's lines), val (the test
split), train_aug = train (the classifier stages' default list). Ids are the image file stems,
unique in CUB. CUB has no segmentation masks: seed / mask mIoU stages do not apply.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np

from recam.data.splits import write_prepared
from recam.data.wsol import read_cub, read_image_list
from recam.errors import RecamInputError
from recam.io import write_text


def _annotation(image_id: str, class_name: str, box: np.ndarray) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "filename").text = f"{image_id}.jpg"
    obj = ET.SubElement(root, "object")
    ET.SubElement(obj, "name").text = class_name
    bndbox = ET.SubElement(obj, "bndbox")
    for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), (box + 1).tolist()):  # VOC: 1-based inclusive
        ET.SubElement(bndbox, tag).text = str(value)
    return ET.tostring(root, encoding="unicode")


def spg_list_split(list_path: Path, cub: dict) -> list[str]:
    """Ids of an SPG CUB list (`001.Black_footed_Albatross/<file>.jpg;0`), checked against CUB."""
    by_path = {path: image for image, path in cub["images"].items()}
    ids = []
    for name, label in read_image_list(list_path):
        if name not in by_path:
            raise RecamInputError(
                f"recam: {list_path} names {name}, which is not in the CUB images.txt - "
                "use the SPG list of this CUB copy"
            )
        image = by_path[name]
        if cub["labels"][image] != label:
            raise RecamInputError(f"recam: {list_path} gives {name} label {label}, CUB says {cub['labels'][image]}")
        ids.append(Path(name).stem)
    return ids


def prepare_cub(
    cub_root: str | os.PathLike,
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    list_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Build the VOC-layout view of CUB at `root` and write the prepared files to `out_dir`.
    list_dir: a folder with SPG's train_list.txt / test_list.txt (spec §2.1) to take the splits
    from; None = CUB's train_test_split.txt (the same 5,994 / 5,794 split)."""
    cub = read_cub(cub_root)
    root = Path(root)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    stems = {image: Path(path).stem for image, path in cub["images"].items()}
    if len(set(stems.values())) != len(stems):
        raise RecamInputError(f"recam: {cub_root}/images.txt repeats an image file name - ids must be unique")
    for image, path in cub["images"].items():
        source = (Path(cub_root) / "images" / path).resolve()
        if not source.is_file():
            raise RecamInputError(f"recam: CUB image {source} is missing - unpack CUB_200_2011.tgz again")
        link = root / "JPEGImages" / f"{stems[image]}.jpg"
        if not link.exists():
            link.symlink_to(source)
        write_text(
            root / "Annotations" / f"{stems[image]}.xml",
            _annotation(stems[image], cub["class_names"][cub["labels"][image]], cub["boxes"][image][0]),
        )
    write_text(root / "class_names.txt", "".join(f"{name}\n" for name in cub["class_names"]))
    if list_dir is not None:
        train = spg_list_split(Path(list_dir) / "train_list.txt", cub)
        val = spg_list_split(Path(list_dir) / "test_list.txt", cub)
    else:
        train, val = [stems[i] for i in cub["train"]], [stems[i] for i in cub["test"]]
    ids = [stems[i] for i in cub["images"]]
    labels = np.zeros((len(ids), len(cub["class_names"])), dtype=np.uint8)
    labels[np.arange(len(ids)), [cub["labels"][i] for i in cub["images"]]] = 1
    return write_prepared(out_dir, {"train": train, "val": val, "train_aug": train}, ids, labels, cub["class_names"])

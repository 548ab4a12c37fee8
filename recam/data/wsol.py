"""WSOL data: SPG list files, the SPG transforms, GT boxes (VOC/ILSVRC XML, CUB), the SPG dataset.

spg-spec.md §2. Boxes are (G, 4) int64 `[x0, y0, x1, y1]`, inclusive 0-based pixels:
* VOC / ILSVRC XML `<bndbox>` hold 1-based inclusive corners (the devkits'): we subtract 1;
* CUB `bounding_boxes.txt` holds `id x y w h` floats: `[round(x), round(y), round(x + w) - 1,
  round(y + h) - 1]` (spec §7.5 leaves the convention to us; this one keeps the width w).
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from recam.data.voc12 import annotation_path
from recam.errors import RecamInputError
from recam.io import load_rgb


# ------------------------------------------------------------------ list files (spec §2.1)


def parse_list_line(line: str) -> tuple[str, float]:
    """One line of an SPG list: `image;label` (CUB) or `image label` (ILSVRC; `.jpg` is appended
    to a name without a dot). Returns (image name, label as float32, as the reference's final
    np.float32 conversion). The multi-label `image l1 l2 ...` form is refused (spec §10 quirk 23:
    broken under Python 3 in the reference, used by no shipped list)."""
    line = line.strip()
    if ";" in line:
        name, label = line.split(";", 1)
        return name.strip(), float(np.float32(label.strip()))
    tokens = line.split()
    if len(tokens) != 2:
        raise RecamInputError(f"recam: SPG list line {line!r} is neither `image;label` nor `image label`")
    name = tokens[0] if "." in tokens[0] else tokens[0] + ".jpg"
    return name, float(np.float32(int(tokens[1])))


def read_image_list(path: str | Path) -> list[tuple[str, int]]:
    """All (image name, 0-based class) pairs of an SPG list file; blank lines skipped."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(
            f"recam: SPG list {path} does not exist - give the datalist file (e.g. "
            "datalist/CUB/train_list.txt of the SPG repository)"
        )
    return [
        (name, int(label))
        for name, label in (parse_list_line(line) for line in path.read_text().splitlines() if line.strip())
    ]


# ------------------------------------------------------------------ transforms (spec §2.3)


def py2_round(x: float) -> int:
    """Python 2's round: half away from zero (CenterCrop's offsets; spec §10 quirk 21)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def resize_short(image: Image.Image, size: int) -> Image.Image:
    """torchvision-0.2 Resize(int): the shorter side becomes `size` (PIL bilinear), the longer
    int(size * long / short), truncated; unchanged when the shorter side already is `size`."""
    width, height = image.size
    if (width <= height and width == size) or (height <= width and height == size):
        return image
    if width < height:
        return image.resize((size, int(size * height / width)), Image.BILINEAR)
    return image.resize((int(size * width / height), size), Image.BILINEAR)


def center_crop_offsets(height: int, width: int, crop: int) -> tuple[int, int]:
    """(i, j) = (round((h - C) / 2), round((w - C) / 2)) with Python-2 rounding."""
    return py2_round((height - crop) / 2), py2_round((width - crop) / 2)


def to_normalized_tensor(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """ToTensor (/255, float32, CHW) then Normalize ((x - m) / s per channel, float32)."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div(255)
    m = torch.tensor(mean, dtype=torch.float32)[:, None, None]
    s = torch.tensor(std, dtype=torch.float32)[:, None, None]
    return x.sub(m).div(s)


def crop_array(image: Image.Image, i: int, j: int, crop: int) -> np.ndarray:
    array = np.asarray(image)
    if array.shape[0] < i + crop or array.shape[1] < j + crop or i < 0 or j < 0:
        raise RecamInputError(
            f"recam: an image of {array.shape[1]}x{array.shape[0]} is smaller than the "
            f"crop {crop} - lower spg.crop_size or raise spg.resize_short"
        )
    return array[i : i + crop, j : j + crop]


def spg_test_transform(
    image: Image.Image, resize: int, crop: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """Resize(S) -> CenterCrop(C) -> ToTensor -> Normalize; S = 0 or C = 0: the full image."""
    if resize == 0 or crop == 0:
        return to_normalized_tensor(np.asarray(image), mean, std)
    image = resize_short(image, resize)
    i, j = center_crop_offsets(image.size[1], image.size[0], crop)
    return to_normalized_tensor(crop_array(image, i, j, crop), mean, std)


def spg_train_transform(
    image: Image.Image,
    resize: int,
    crop: int,
    mean: Sequence[float],
    std: Sequence[float],
    offsets: tuple[int, int] | None = None,
    flip: bool | None = None,
    rng: np.random.Generator | None = None,
) -> torch.Tensor:
    """Resize(S) -> RandomCrop(C) (i, j uniform in [0, h - C], [0, w - C], ends included) ->
    horizontal flip with p 0.5 -> ToTensor -> Normalize. `offsets`/`flip` apply recorded draws;
    otherwise they come from `rng` (our per-sample generator, not Python's `random`)."""
    image = resize_short(image, resize)
    width, height = image.size
    if offsets is None:
        offsets = (int(rng.integers(0, height - crop + 1)), int(rng.integers(0, width - crop + 1)))
    if flip is None:
        flip = bool(rng.random() < 0.5)
    array = crop_array(image, offsets[0], offsets[1], crop)
    if flip:
        array = array[:, ::-1]
    return to_normalized_tensor(array, mean, std)


class SPGDataset(Dataset):
    """Images with their multi-hot labels and the SPG transforms, for the `spg` stage.

    paths: one image file per item; labels (N, K) float32 multi-hot (one-hot on CUB / ILSVRC).
    Item: {"image": (3, C, C) float32, "label": (K,) float32, "id": str}. Train draws come from
    np.random.default_rng([seed, epoch, index]), so they do not depend on the worker count.
    """

    def __init__(
        self,
        paths: Sequence[Path],
        ids: Sequence[str],
        labels: np.ndarray,
        *,
        train: bool,
        resize: int,
        crop: int,
        mean: Sequence[float],
        std: Sequence[float],
        seed: int = 0,
    ) -> None:
        self.paths, self.ids, self.labels = list(paths), list(ids), np.asarray(labels, dtype=np.float32)
        self.train, self.resize, self.crop = train, resize, crop
        self.mean, self.std, self.seed, self.epoch = tuple(mean), tuple(std), seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        image = Image.fromarray(load_rgb(self.paths[index]))
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x = spg_train_transform(image, self.resize, self.crop, self.mean, self.std, rng=rng)
        else:
            x = spg_test_transform(image, self.resize, self.crop, self.mean, self.std)
        return {"image": x, "label": torch.from_numpy(self.labels[index]), "id": self.ids[index]}


# ------------------------------------------------------------------ GT boxes


def boxes_from_xml(xml_path: str | Path, class_names: Sequence[str]) -> dict[int, np.ndarray]:
    """GT boxes per 0-based class of one VOC / ILSVRC-devkit annotation: {class: (G, 4) int64},
    inclusive 0-based (the files' 1-based corners minus 1). Unknown object names are skipped."""
    xml_path = Path(xml_path)
    if not xml_path.is_file():
        raise RecamInputError(
            f"recam: annotation {xml_path} does not exist - the box evaluation needs the "
            "dataset's XML boxes (VOC Annotations/ or ILSVRC's val bounding-box XMLs)"
        )
    try:
        root = ET.parse(xml_path).getroot()
    except ET.ParseError as err:
        raise RecamInputError(f"recam: annotation {xml_path} is not valid XML ({err}) - restore the file") from err
    index = {name: k for k, name in enumerate(class_names)}
    boxes: dict[int, list[list[int]]] = {}
    for obj in root.findall("object"):
        k = index.get((obj.findtext("name") or "").strip())
        box = obj.find("bndbox")
        if k is None or box is None:
            continue
        corners = [int(round(float(box.findtext(tag)))) - 1 for tag in ("xmin", "ymin", "xmax", "ymax")]
        boxes.setdefault(k, []).append(corners)
    return {k: np.array(v, dtype=np.int64).reshape(-1, 4) for k, v in boxes.items()}


def voc_boxes(root: str, image_id: str, class_names: Sequence[str]) -> dict[int, np.ndarray]:
    """Boxes of `<root>/Annotations/<id>.xml` (VOC and the synthetic set)."""
    return boxes_from_xml(annotation_path(root, image_id), class_names)


def ilsvrc_val_boxes(xml_dir: str | Path, image_id: str, wnids: Sequence[str]) -> dict[int, np.ndarray]:
    """ILSVRC2012 CLS-LOC val boxes of `<xml_dir>/<image id>.xml`, classes by WNID in `wnids`
    order (map_clsloc.txt order for SPG: spec §2.1). Every box of the image is kept (the devkit's
    any-box rule)."""
    return boxes_from_xml(Path(xml_dir) / f"{Path(image_id).stem}.xml", wnids)


def read_map_clsloc(path: str | Path) -> list[str]:
    """WNIDs in `map_clsloc.txt` order (`n02119789 1 kit_fox` per line): line i is class i."""
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: {path} does not exist - put the SPG repository's map_clsloc.txt there")
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def cub_box(x: float, y: float, w: float, h: float) -> np.ndarray:
    """CUB `x y w h` float box -> inclusive [x0, y0, x1, y1] (module docstring)."""
    return np.array([round(x), round(y), round(x + w) - 1, round(y + h) - 1], dtype=np.int64)


def read_cub(root: str | Path) -> dict:
    """CUB-200-2011 metadata under `root` (the folder holding images/, images.txt,
    image_class_labels.txt, train_test_split.txt, bounding_boxes.txt, classes.txt).

    Returns {"class_names": 200 names (folder order), "images": {image id: relative path},
    "labels": {id: 0-based class = folder number - 1}, "train"/"test": id lists (official split),
    "boxes": {id: (1, 4) int64}}. One error line per missing file."""
    root = Path(root)
    files = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "bounding_boxes.txt", "classes.txt")
    for name in files:
        if not (root / name).is_file():
            raise RecamInputError(
                f"recam: dataset.root={root} has no {name} - unpack CUB_200_2011.tgz there "
                "(it holds images/ and the .txt files)"
            )
    if not (root / "images").is_dir():
        raise RecamInputError(f"recam: dataset.root={root} has no images/ folder - unpack CUB_200_2011.tgz there")

    def table(name: str) -> list[list[str]]:
        return [line.split() for line in (root / name).read_text().splitlines() if line.strip()]

    images = {row[0]: row[1] for row in table("images.txt")}
    labels = {row[0]: int(row[1]) - 1 for row in table("image_class_labels.txt")}
    split = {row[0]: row[1] == "1" for row in table("train_test_split.txt")}
    boxes = {row[0]: cub_box(*map(float, row[1:5]))[None] for row in table("bounding_boxes.txt")}
    class_names = [row[1] for row in table("classes.txt")]
    return {
        "class_names": class_names,
        "images": images,
        "labels": labels,
        "boxes": boxes,
        "train": [i for i in images if split.get(i)],
        "test": [i for i in images if not split.get(i, True)],
    }


def cub_list_lines(cub: dict, split: str) -> list[str]:
    """The SPG list lines (`path;label`) of a CUB split, in images.txt order."""
    return [f"{cub['images'][i]};{cub['labels'][i]}" for i in cub[split]]


def image_size(path: str | Path) -> tuple[int, int]:
    """(H, W) from the header."""
    with Image.open(path) as image:
        width, height = image.size
    return height, width

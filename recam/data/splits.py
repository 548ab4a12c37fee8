"""Image lists and image-level labels derived from the user's VOC/SBD download (spec §1.1, §1.3).

The reference ships `train_aug.txt` and a pickled `cls_labels.npy`; we derive both from the
dataset on disk so that nothing is copied from the reference:

* train / val (/ test): `ImageSets/Segmentation/{train,val,test}.txt`, in file order.
* train_aug: VOC2012 train ∪ SBD (train+val) − VOC2012 val, sorted as strings. That reproduces
  the reference's 10,582-id list byte for byte (it is sorted, one id per line).
* labels: the XML route (`Annotations/<id>.xml`), for train_aug ∪ val ∪ train, rows sorted by id.

`prepare_voc12` is what the `prepare` stage calls; the rest are plain functions it composes.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from recam.engine.progress import progress

from recam.data.voc12 import (
    DOWNLOAD_HINT,
    annotation_path,
    check_voc_root,
    image_path,
    labels_from_xml,
    read_class_names,
    read_id_list,
)
from recam.errors import RecamInputError
from recam.io import load_npz, save_npz, write_json, write_text

log = logging.getLogger(__name__)

LABELLED_SPLITS = ("train", "val", "train_aug")  # test has no public annotations
_SHOW = 5  # ids quoted in an error message about many missing files

SBD_HINT = (
    "download SBD's SegmentationClassAug and unpack it at {aug}, or set dataset.sbd_root to SBD's "
    "benchmark_RELEASE/dataset folder (train.txt, val.txt, cls/)"
)


def _stems(folder: Path, suffix: str) -> list[str]:
    """Sorted stems of the files `folder/*<suffix>`, skipping hidden files (macOS `._x.png`)."""
    with os.scandir(folder) as entries:
        return sorted(
            entry.name[: -len(suffix)]
            for entry in entries
            if entry.name.endswith(suffix) and not entry.name.startswith(".")
        )


def _quote(ids: Sequence[str]) -> str:
    shown = ", ".join(ids[:_SHOW])
    return shown + (", ..." if len(ids) > _SHOW else "")


def _sbd_ids_from_root(sbd_root: Path) -> tuple[list[str], str]:
    """SBD ids from SBD's own folder: its train.txt + val.txt, else the stems of cls/*.mat.

    Accepts `benchmark_RELEASE/dataset` itself or the `benchmark_RELEASE` folder above it.
    """
    if not sbd_root.is_dir():
        raise RecamInputError(
            f"recam: dataset.sbd_root={sbd_root} does not exist - point it at SBD's benchmark_RELEASE/dataset "
            f"folder, or unset it and unpack SBD's SegmentationClassAug into dataset.root.")
    for folder in (sbd_root, sbd_root / "dataset"):
        lists = [folder / "train.txt", folder / "val.txt"]
        if all(path.is_file() for path in lists):
            ids = read_id_list(lists[0]) + read_id_list(lists[1])
            return sorted(set(ids)), f"{lists[0]} + {lists[1].name}"
        if (folder / "cls").is_dir():
            ids = _stems(folder / "cls", ".mat")
            if ids:
                return ids, f"{folder / 'cls'}/*.mat"
    raise RecamInputError(
        f"recam: dataset.sbd_root={sbd_root} has neither train.txt + val.txt nor cls/*.mat - point it at "
        f"SBD's benchmark_RELEASE/dataset folder, or unset it and unpack SBD's SegmentationClassAug into dataset.root.")


def find_sbd_ids(root: str | os.PathLike, sbd_root: str | os.PathLike | None = None) -> tuple[list[str], str]:
    """The SBD (train+val) image ids available to the user, and a description of where they came from.

    An explicit `sbd_root` (SBD's `dataset/` folder: train.txt + val.txt, or cls/*.mat) is used when
    given, because a setting the user made must not be silently ignored; otherwise the names of
    `<root>/SegmentationClassAug/*.png` (the common "SegmentationClassAug" download, which also
    holds VOC's own train/val masks - harmless, since val is subtracted and train is added anyway).
    Only file names are read. Returns (sorted ids, source).
    """
    if sbd_root is not None:
        return _sbd_ids_from_root(Path(sbd_root))
    aug = Path(root) / "SegmentationClassAug"
    if not aug.is_dir():
        raise RecamInputError(
            f"recam: dataset.root={root} has no SegmentationClassAug/ and dataset.sbd_root is not set, so "
            f"train_aug cannot be built - {SBD_HINT.format(aug=aug)}.")
    ids = _stems(aug, ".png")
    if not ids:
        raise RecamInputError(f"recam: {aug} holds no .png files - {SBD_HINT.format(aug=aug)}.")
    return ids, f"{aug}/*.png"


def check_images(root: str | os.PathLike, splits: Mapping[str, Sequence[str]]) -> None:
    """Raise one RecamInputError if an id of `splits` has no `<root>/JPEGImages/<id>.jpg`.

    Lists JPEGImages once instead of stat-ing 12k paths. SBD's ids are all VOC2012 trainval
    images, so a miss means an incomplete unpack (or a list from another dataset).
    """
    folder = Path(root) / "JPEGImages"
    if not folder.is_dir():
        raise RecamInputError(f"recam: dataset.root={root} has no JPEGImages/ ({folder}) - {DOWNLOAD_HINT}.")
    present = set(_stems(folder, ".jpg"))
    for split, ids in splits.items():
        missing = [image_id for image_id in ids if image_id not in present]
        if missing:
            raise RecamInputError(
                f"recam: {len(missing)} of {len(ids)} {split} ids have no image in {folder} "
                f"({_quote(missing)}) - unpack the complete VOC2012 trainval tar there ({DOWNLOAD_HINT}).")


def derive_splits(root: str | os.PathLike, sbd_root: str | os.PathLike | None = None) -> dict[str, list[str]]:
    """The image lists of spec §1.1 from a VOC2012 devkit and an SBD source.

    Returns {"train", "val", "train_aug"} (plus "test" when `ImageSets/Segmentation/test.txt`
    exists), each a list of string ids. train/val/test keep their file order; train_aug is
    VOC2012 train ∪ SBD(train+val) − VOC2012 val, sorted ascending as strings, which is exactly
    the order of the reference list. SBD ids come from `find_sbd_ids`. Every train/val/train_aug
    id must have a JPEG; test images ship in a separate tar and are not checked.
    """
    root = Path(root)
    lists = root / "ImageSets" / "Segmentation"
    train = read_id_list(lists / "train.txt")
    val = read_id_list(lists / "val.txt")
    overlap = sorted(set(train) & set(val))
    if overlap:
        raise RecamInputError(
            f"recam: {lists}/train.txt and val.txt share {len(overlap)} ids ({_quote(overlap)}) - restore the "
            f"lists from the VOC2012 trainval tar.")
    sbd, source = find_sbd_ids(root, sbd_root)
    train_aug = sorted((set(train) | set(sbd)) - set(val))
    log.info("train_aug: %d ids = %d VOC train + %d SBD ids (%s) - %d VOC val",
             len(train_aug), len(train), len(sbd), source, len(val))
    splits = {"train": train, "val": val, "train_aug": train_aug}
    check_images(root, splits)
    if (lists / "test.txt").is_file():
        splits["test"] = read_id_list(lists / "test.txt")
    return splits


def derive_labels(root: str | os.PathLike, ids: Sequence[str], class_names: Sequence[str],
                  unknown_classes: str = "ignore") -> np.ndarray:
    """Image-level labels from `<root>/Annotations/<id>.xml` (spec §1.3, the XML route).

    Returns (N, K) uint8 multi-hot, row i for ids[i], column k for class_names[k]. All missing
    XML files are reported together in one error before any parsing. An object name that is not a
    class: `unknown_classes="fail"` stops with one line naming the file and the name; "ignore" sets
    no bit (the reference) and logs how many there were.
    """
    folder = Path(root) / "Annotations"
    if not folder.is_dir():
        raise RecamInputError(f"recam: dataset.root={root} has no Annotations/ ({folder}) - {DOWNLOAD_HINT}.")
    present = set(_stems(folder, ".xml"))
    missing = [image_id for image_id in ids if image_id not in present]
    if missing:
        raise RecamInputError(
            f"recam: {len(missing)} of {len(ids)} ids have no annotation in {folder} (e.g. "
            f"{annotation_path(root, missing[0])}; {_quote(missing)}) - image labels come from these XML files; "
            f"unpack the complete VOC2012 trainval tar ({DOWNLOAD_HINT}).")
    labels = np.zeros((len(ids), len(class_names)), dtype=np.uint8)
    ignored = 0
    for i, image_id in enumerate(progress(ids, desc="prepare: labels", leave=False, disable=None)):
        unknown: list[str] = []
        labels[i] = labels_from_xml(annotation_path(root, image_id), class_names, unknown)
        if unknown and unknown_classes == "fail":
            raise RecamInputError(
                f"recam: annotation {annotation_path(root, image_id)} names class {unknown[0]!r}, not one of the "
                f"{len(class_names)} classes ({', '.join(class_names[:4])}, ...) - fix the XML, add the class to "
                f"{Path(root) / 'class_names.txt'}, or set dataset.unknown_classes=ignore (the reference's rule)")
        ignored += len(unknown)
    if ignored:
        log.warning("prepare: %d object names in the annotations are not classes and set no label "
                    "(dataset.unknown_classes=ignore)", ignored)
    return labels


def label_counts(labels: np.ndarray) -> np.ndarray:
    """Per-class positive counts: (N, K) multi-hot -> (K,) int64."""
    return np.asarray(labels).astype(np.int64).sum(axis=0)


def summarize_labels(
    splits: Mapping[str, Sequence[str]],
    ids: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Statistics of the labels per split, for `label_stats.json` and the check against spec §1.3.

    For every split with labels: images, per-class counts, mean labels per image, number of
    single-label and of label-free images (label-free images get no seed; spec pitfall 17),
    min/max labels. A split without labels (test) gets only its image count.
    """
    row = {image_id: i for i, image_id in enumerate(ids)}
    stats: dict[str, Any] = {"class_names": list(class_names), "labelled_images": len(ids), "splits": {}}
    for split, split_ids in splits.items():
        if split not in LABELLED_SPLITS:
            stats["splits"][split] = {"images": len(split_ids)}
            continue
        split_labels = labels[[row[image_id] for image_id in split_ids]].astype(np.int64)
        per_image = split_labels.sum(axis=1)
        stats["splits"][split] = {
            "images": len(split_ids),
            "per_class": dict(zip(class_names, label_counts(split_labels).tolist())),
            "mean_labels": float(per_image.mean()) if len(split_ids) else 0.0,
            "single_label": int((per_image == 1).sum()),
            "no_label": int((per_image == 0).sum()),
            "min_labels": int(per_image.min()) if len(split_ids) else 0,
            "max_labels": int(per_image.max()) if len(split_ids) else 0,
        }
    return stats


def write_prepared(
    out_dir: str | os.PathLike,
    splits: Mapping[str, Sequence[str]],
    ids: Sequence[str],
    labels: np.ndarray,
    class_names: Sequence[str],
) -> dict[str, Any]:
    """Write the prepared dataset files into `out_dir` (atomically) and return the label statistics.

    Files: `<split>.txt` (one id per line, as the reference lists), `cls_labels.npz` with `ids`
    (N,) unicode and `labels` (N, K) uint8 - the reference's content keyed by string id instead
    of a pickled int-keyed dict (spec §9, pitfall 7) - `class_names.txt` and `label_stats.json`.
    `ids`/`labels` must cover every id of the labelled splits; rows are written sorted by id.
    """
    labels = np.asarray(labels)
    if labels.shape != (len(ids), len(class_names)):
        raise ValueError(f"labels have shape {labels.shape}, expected ({len(ids)}, {len(class_names)})")
    if len(set(ids)) != len(ids):
        raise ValueError("ids repeat an image")
    uncovered = sorted({i for s in LABELLED_SPLITS if s in splits for i in splits[s]} - set(ids))
    if uncovered:
        raise ValueError(f"{len(uncovered)} split ids have no labels ({_quote(uncovered)})")
    order = np.argsort(np.asarray(ids, dtype=str), kind="stable")
    sorted_ids = np.asarray(ids, dtype=str)[order]
    sorted_labels = labels[order].astype(np.uint8)

    out_dir = Path(out_dir)
    for split, split_ids in splits.items():
        write_text(out_dir / f"{split}.txt", "".join(f"{image_id}\n" for image_id in split_ids))
    write_text(out_dir / "class_names.txt", "".join(f"{name}\n" for name in class_names))
    save_npz(out_dir / "cls_labels.npz", ids=sorted_ids, labels=sorted_labels)
    stats = summarize_labels(splits, list(sorted_ids), sorted_labels, class_names)
    write_json(out_dir / "label_stats.json", stats)
    return stats


def load_cls_labels(path: str | os.PathLike, *, num_classes: int | None = None) -> dict[str, np.ndarray]:
    """Read a `cls_labels.npz` (ours or the reference's) as {id: (K,) float32 multi-hot}.

    With `num_classes`, a file with another K is rejected (labels of a different class list).
    """
    arrays = load_npz(path)
    if set(arrays) != {"ids", "labels"}:
        raise RecamInputError(f"recam: {path} holds {sorted(arrays)}, expected ids and labels - re-run stage=prepare")
    ids, labels = arrays["ids"], arrays["labels"]
    if labels.ndim != 2 or labels.shape[0] != ids.shape[0]:
        raise RecamInputError(f"recam: {path} has {ids.shape[0]} ids but labels of shape {labels.shape} - re-run stage=prepare")
    if num_classes is not None and labels.shape[1] != num_classes:
        raise RecamInputError(
            f"recam: {path} has labels for {labels.shape[1]} classes, the dataset has {num_classes} - re-run stage=prepare")
    return {str(image_id): row.astype(np.float32) for image_id, row in zip(ids, labels)}


CHECK_MODES = ("decode", "header", "none")
BAD_IMAGE_POLICIES = ("fail", "skip")


def _image_problem(path: Path, decode: bool) -> str | None:
    """None if the image opens (and, with decode, decodes fully); else the reason."""
    try:
        with Image.open(path) as image:
            if decode:
                image.load()
    except Exception as err:  # missing, truncated, not an image, ...
        return f"{type(err).__name__}: {err}"
    return None


def find_bad_images(root: str | os.PathLike, ids: Sequence[str], mode: str = "decode",
                    workers: int | None = None) -> dict[str, str]:
    """{id: reason} of the images of `ids` that cannot be opened (mode header) or decoded (decode).

    Decoding a VOC-sized JPEG takes a few ms and PIL releases the GIL, so a thread pool checks
    the 12k images of VOC train_aug + val in well under a minute.
    """
    if mode not in CHECK_MODES:
        raise RecamInputError(f"recam: dataset.check_images={mode!r} - use one of {', '.join(CHECK_MODES)}")
    if mode == "none" or not ids:
        return {}
    paths = [image_path(root, i) for i in ids]
    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        problems = list(progress(pool.map(lambda p: _image_problem(p, mode == "decode"), paths), total=len(paths),
                             desc="check images", unit="img", dynamic_ncols=True))
    return {i: why for i, why in zip(ids, problems) if why is not None}


def drop_bad_images(splits: dict[str, list[str]], bad: Mapping[str, str], root: str | os.PathLike,
                    policy: str) -> dict[str, list[str]]:
    """Apply dataset.bad_images: fail -> one line naming the first bad file; skip -> the splits without them."""
    if policy not in BAD_IMAGE_POLICIES:
        raise RecamInputError(f"recam: dataset.bad_images={policy!r} - use one of {', '.join(BAD_IMAGE_POLICIES)}")
    if not bad:
        return splits
    first = next(iter(bad))
    if policy == "fail":
        raise RecamInputError(f"recam: {len(bad)} images are unreadable or corrupt, e.g. {image_path(root, first)} "
                              f"({bad[first]}) - replace them, or set dataset.bad_images=skip to leave them out")
    log.warning("leaving out %d unreadable images (dataset.bad_images=skip), e.g. %s (%s)", len(bad), first, bad[first])
    return {split: [i for i in split_ids if i not in bad] for split, split_ids in splits.items()}


# The reference's VOC 2012 statistics (pipeline-spec §1.1, §1.3; ../shared/reference/voc12): list
# sizes and per-class positive counts in VOC class order, to check a user's download against.
VOC12_SIZES = {"train": 1464, "val": 1449, "train_aug": 10582}
VOC12_COUNTS = {
    "train": [88, 65, 105, 78, 87, 78, 128, 131, 148, 64, 82, 121, 68, 81, 442, 82, 63, 93, 83, 84],
    "train_aug": [590, 504, 705, 468, 714, 393, 1150, 1005, 1228, 267, 613, 1188, 445, 492, 4155, 522, 300, 649,
                  503, 567],
    "val": [90, 79, 103, 72, 96, 74, 127, 119, 123, 71, 75, 128, 79, 76, 445, 85, 57, 90, 84, 74],
}


def compare_with_reference(stats: Mapping[str, Any], sizes: Mapping[str, int],
                           counts: Mapping[str, Sequence[int]] | None = None) -> dict[str, Any]:
    """Compare the derived list sizes (and per-class counts) with the reference's; log each difference.

    Returns {"matches": bool, "differences": [one line per difference]}. A difference is a warning,
    not an error: a newer devkit or a custom SBD list is allowed, but the numbers of the paper are
    then not expected.
    """
    counts = VOC12_COUNTS if counts is None else counts
    differences = []
    for split, expected in sizes.items():
        got = stats["splits"].get(split, {}).get("images")
        if got != expected:
            differences.append(f"{split}: {got} images, the reference has {expected}")
        elif split in counts:
            per_class = list(stats["splits"][split]["per_class"].values())
            if per_class != list(counts[split]):
                names = list(stats["splits"][split]["per_class"])
                k = next(i for i, (a, b) in enumerate(zip(per_class, counts[split])) if a != b)
                differences.append(f"{split}: {per_class[k]} images labelled {names[k]}, the reference has "
                                   f"{counts[split][k]}")
    for line in differences:
        log.warning("prepare: %s - results will not be comparable with the paper's", line)
    return {"matches": not differences, "differences": differences}


def prepare_voc12(
    root: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    sbd_root: str | os.PathLike | None = None,
    check_images: str = "none",
    bad_images: str = "fail",
    unknown_classes: str = "ignore",
    reference_sizes: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """The `prepare` stage's work on a VOC-layout root: lists + XML labels -> files in `out_dir`.

    Checks the devkit, derives the splits (`derive_splits`) and the labels of train_aug ∪ val ∪
    train (`derive_labels`, rows sorted by id), writes them with `write_prepared` and returns its
    statistics. Class names come from `read_class_names` (VOC's 20 unless `class_names.txt`).
    `check_images` / `bad_images`: see `find_bad_images` and `drop_bad_images` (the stage passes
    dataset.check_images, decode by default; the function's own default skips the check).
    """
    root = check_voc_root(root)
    class_names = read_class_names(root)
    splits = derive_splits(root, sbd_root)
    ids = sorted({image_id for split in LABELLED_SPLITS for image_id in splits[split]})
    bad = find_bad_images(root, ids, check_images)
    splits = drop_bad_images(splits, bad, root, bad_images)
    ids = [i for i in ids if i not in bad]
    empty = [split for split in LABELLED_SPLITS if not splits[split]]
    if empty:
        raise RecamInputError(f"recam: split {empty[0]} of {root} has no images left"
                              f"{' after leaving out the bad ones' if bad else ''} - check "
                              f"{Path(root) / 'ImageSets' / 'Segmentation'} and the images")
    labels = derive_labels(root, ids, class_names, unknown_classes)
    stats = write_prepared(out_dir, splits, ids, labels, class_names)
    if bad:   # label_stats.json keeps the reference statistics; the left-out images are reported beside
        write_json(Path(out_dir) / "bad_images.json", bad)
    stats = {**stats, "bad_images": dict(bad)}
    for split in LABELLED_SPLITS:
        if no_label := stats["splits"][split]["no_label"]:
            log.warning("%d of %d %s images have no label of %d classes; they give the classifier only negatives "
                        "and get no seed", no_label, len(splits[split]), split, len(class_names))
    if reference_sizes is not None:
        stats["reference_check"] = compare_with_reference(stats, reference_sizes)
    log.info("prepared %s", ", ".join(f"{split} {len(split_ids)}" for split, split_ids in splits.items()))
    return stats

"""The `prepare` logic reproduces the reference VOC lists and labels from a fake devkit.

The fake devkit has the reference ids as file names only (zero-byte JPEGs and SegmentationClassAug
PNGs, since the derivation reads names) and XML annotations written from the reference labels,
with difficult, truncated, duplicated and part-carrying objects mixed in to exercise the label rules.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from recam.data.splits import (
    derive_labels,
    derive_splits,
    find_sbd_ids,
    label_counts,
    load_cls_labels,
    prepare_voc12,
    write_prepared,
)
from recam.data.voc12 import (
    VOC_CLASSES,
    check_voc_root,
    labels_from_xml,
    read_class_names,
    read_id_list,
)
from recam.errors import RecamInputError

# Spec §1.3: per-class positive counts of the reference label file (the spec's sanity check).
SPEC_COUNTS = {
    "train": [88, 65, 105, 78, 87, 78, 128, 131, 148, 64, 82, 121, 68, 81, 442, 82, 63, 93, 83, 84],
    "train_aug": [
        590,
        504,
        705,
        468,
        714,
        393,
        1150,
        1005,
        1228,
        267,
        613,
        1188,
        445,
        492,
        4155,
        522,
        300,
        649,
        503,
        567,
    ],
    "val": [90, 79, 103, 72, 96, 74, 127, 119, 123, 71, 75, 128, 79, 76, 445, 85, 57, 90, 84, 74],
}
SPEC_SIZES = {"train": 1464, "val": 1449, "train_aug": 10582, "test": 1456}

PERSON = VOC_CLASSES.index("person")


def _object(name: str, *, difficult: bool = False, truncated: bool = False, parts: tuple[str, ...] = ()) -> str:
    part_xml = "".join(f"<part><name>{part}</name><bndbox><xmin>1</xmin></bndbox></part>" for part in parts)
    return (
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>{int(truncated)}</truncated>"
        f"<difficult>{int(difficult)}</difficult><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax>"
        f"<ymax>9</ymax></bndbox>{part_xml}</object>"
    )


def _annotation(image_id: str, objects: list[str]) -> str:
    return (
        f"<annotation><folder>VOC2012</folder><filename>{image_id}.jpg</filename>"
        f"<owner><flickrid>someone</flickrid><name>Fried Camels</name></owner>"
        f"<size><width>10</width><height>10</height><depth>3</depth></size>"
        f"<segmented>1</segmented>{''.join(objects)}</annotation>"
    )


def _fake_xml(image_id: str, row: np.ndarray, n: int) -> str:
    """An annotation whose class set is `row`, varied by n so every rule is exercised on many files."""
    objects = []
    for k in np.flatnonzero(row):
        name = VOC_CLASSES[k]
        if n % 13 == 0:
            name = f"\n\t\t{name}\n\t"  # whitespace around the name, as in some VOC files
        parts = ("head", "hand", "foot") if k == PERSON and n % 3 == 0 else ()
        # The class's only object may be difficult or truncated: it must still set the bit.
        objects.append(_object(name, difficult=n % 5 == 0, truncated=n % 7 == 0, parts=parts))
        if n % 4 == 0:
            objects.append(_object(name))
    if n % 11 == 0:
        objects.append(_object("background"))
    return _annotation(image_id, objects)


def _touch_all(folder: Path, ids, suffix: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        (folder / f"{image_id}{suffix}").touch()


def _write_list(path: Path, ids) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{i}\n" for i in ids))


# conftest's `reference_voc12` is function-scoped; the 12k-file devkit is built once per module,
# so the same folder is located here with the same skip rule.
REFERENCE_VOC12 = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "voc12"


@pytest.fixture(scope="module")
def reference() -> dict:
    """The reference lists (file order) and labels."""
    folder = REFERENCE_VOC12
    if not (folder / "train_aug.txt").is_file():
        pytest.skip(f"reference VOC lists not found at {folder}")
    with np.load(folder / "cls_labels.npz", allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    ref = {split: read_id_list(folder / f"{split}.txt") for split in SPEC_SIZES}
    ref.update(folder=folder, ids=arrays["ids"], labels=arrays["labels"])
    return ref


@pytest.fixture(scope="module")
def devkit(reference, tmp_path_factory) -> Path:
    """A VOCdevkit/VOC2012 with the reference ids: names only, plus generated XMLs."""
    root = tmp_path_factory.mktemp("VOCdevkit") / "VOC2012"
    lists = root / "ImageSets" / "Segmentation"
    for split in ("train", "val", "test"):
        _write_list(lists / f"{split}.txt", reference[split])
    trainval = [str(i) for i in reference["ids"]]
    # The common SegmentationClassAug download holds train_aug ∪ val (12,031 PNGs).
    _touch_all(root / "SegmentationClassAug", trainval, ".png")
    _touch_all(root / "JPEGImages", trainval + ["2012_999998", "2012_999999"], ".jpg")
    (root / "Annotations").mkdir()
    for n, (image_id, row) in enumerate(zip(trainval, reference["labels"])):
        (root / "Annotations" / f"{image_id}.xml").write_text(_fake_xml(image_id, row, n))
    return root


@pytest.fixture(scope="module")
def prepared(devkit, tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("prepare")
    return out, prepare_voc12(devkit, out)


def test_derive_splits_reproduces_reference_lists(devkit, reference):
    splits = derive_splits(devkit)
    assert list(splits) == ["train", "val", "train_aug", "test"]
    for split, size in SPEC_SIZES.items():
        assert len(splits[split]) == size
        assert splits[split] == reference[split]  # same ids, same order
    assert all(isinstance(i, str) for i in splits["train_aug"])
    assert set(splits["train"]) <= set(splits["train_aug"])
    assert not set(splits["val"]) & set(splits["train_aug"])
    # The reference train_aug order is plain ascending string order.
    assert splits["train_aug"] == sorted(splits["train_aug"])


def test_sbd_root_lists_give_the_same_train_aug(devkit, reference, tmp_path):
    # An SBD-like id set: most of train_aug, half of VOC train missing (added back from VOC train),
    # a third of VOC val present (removed again), split arbitrarily into SBD's train and val.
    sbd = sorted((set(reference["train_aug"]) - set(reference["train"][::2])) | set(reference["val"][::3]))
    dataset = tmp_path / "benchmark_RELEASE" / "dataset"
    _write_list(dataset / "train.txt", sbd[::2])
    _write_list(dataset / "val.txt", sbd[1::2])
    ids, source = find_sbd_ids(devkit, dataset)
    assert ids == sbd and "train.txt" in source
    # An explicit sbd_root wins over the SegmentationClassAug folder of the devkit.
    assert derive_splits(devkit, dataset)["train_aug"] == reference["train_aug"]
    # SBD's parent folder is accepted too.
    assert derive_splits(devkit, dataset.parent)["train_aug"] == reference["train_aug"]


def test_sbd_cls_mat_files_give_the_same_train_aug(devkit, reference, tmp_path):
    sbd = sorted(set(reference["train_aug"]) - set(reference["train"][1::2]))
    _touch_all(tmp_path / "dataset" / "cls", sbd, ".mat")
    (tmp_path / "dataset" / "cls" / "._2007_000032.mat").touch()  # macOS metadata is not an id
    assert derive_splits(devkit, tmp_path / "dataset")["train_aug"] == reference["train_aug"]


def test_derive_labels_reproduces_reference(devkit, reference):
    ids = [str(i) for i in reference["ids"]]
    labels = derive_labels(devkit, ids, VOC_CLASSES)
    assert labels.dtype == np.uint8 and labels.shape == (12031, 20)
    np.testing.assert_array_equal(labels, reference["labels"])
    row = {image_id: i for i, image_id in enumerate(ids)}
    for split, counts in SPEC_COUNTS.items():
        split_labels = labels[[row[i] for i in reference[split]]]
        assert label_counts(split_labels).tolist() == counts, split
    train_aug = labels[[row[i] for i in reference["train_aug"]]].sum(axis=1)
    assert round(float(train_aug.mean()), 3) == 1.555
    assert int((train_aug == 1).sum()) == 6249
    assert train_aug.min() == 1 and train_aug.max() == 6


def test_prepare_writes_reference_files(prepared, reference):
    out, stats = prepared
    for split in SPEC_SIZES:  # byte-identical lists, trailing newline included
        assert (out / f"{split}.txt").read_bytes() == (reference["folder"] / f"{split}.txt").read_bytes()
    with np.load(out / "cls_labels.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["ids", "labels"]
        assert z["ids"].dtype == reference["ids"].dtype  # <U11, not object or bytes
        np.testing.assert_array_equal(z["ids"], reference["ids"])
        assert z["labels"].dtype == np.uint8
        np.testing.assert_array_equal(z["labels"], reference["labels"])
    assert (out / "class_names.txt").read_text().split("\n")[:-1] == list(VOC_CLASSES)
    saved = json.loads((out / "label_stats.json").read_text())
    assert stats["bad_images"] == {}  # check_images defaults to none in the function (zero-byte JPEGs here)
    assert saved == json.loads(json.dumps({k: v for k, v in stats.items() if k != "bad_images"}))
    for split, counts in SPEC_COUNTS.items():
        assert list(saved["splits"][split]["per_class"].values()) == counts
        assert saved["splits"][split]["images"] == SPEC_SIZES[split]
    assert round(saved["splits"]["train_aug"]["mean_labels"], 3) == 1.555
    assert saved["splits"]["train_aug"]["single_label"] == 6249
    assert saved["splits"]["train_aug"]["no_label"] == 0
    assert saved["splits"]["test"] == {"images": 1456}
    assert saved["labelled_images"] == 12031


def test_load_cls_labels_round_trip(prepared, reference):
    out, _ = prepared
    labels = load_cls_labels(out / "cls_labels.npz", num_classes=20)
    assert len(labels) == 12031
    vector = labels["2007_000032"]
    assert vector.dtype == np.float32 and vector.shape == (20,)
    np.testing.assert_array_equal(vector, reference["labels"][0].astype(np.float32))
    assert load_cls_labels(reference["folder"] / "cls_labels.npz").keys() == labels.keys()
    with pytest.raises(RecamInputError, match="the dataset has 21"):
        load_cls_labels(out / "cls_labels.npz", num_classes=21)


def test_write_prepared_sorts_rows_and_rejects_uncovered_ids(tmp_path):
    splits = {"train": ["b_2", "a_1"], "val": ["c_3"], "train_aug": ["a_1", "b_2"]}
    labels = np.array([[0, 1], [1, 0], [1, 1]], dtype=np.uint8)
    stats = write_prepared(tmp_path, splits, ["c_3", "b_2", "a_1"], labels, ["x", "y"])
    with np.load(tmp_path / "cls_labels.npz", allow_pickle=False) as z:
        assert z["ids"].tolist() == ["a_1", "b_2", "c_3"]
        assert z["labels"].tolist() == [[1, 1], [1, 0], [0, 1]]
    assert (tmp_path / "train.txt").read_text() == "b_2\na_1\n"  # split lists keep their order
    assert stats["splits"]["train"]["per_class"] == {"x": 2, "y": 1}
    assert stats["splits"]["train"]["single_label"] == 1
    with pytest.raises(ValueError, match="no labels"):
        write_prepared(tmp_path, {"train": ["d_4"]}, ["a_1"], labels[:1], ["x", "y"])


# ---- XML rules ---------------------------------------------------------------------------


def test_xml_parts_ignored_difficult_counted_unknown_ignored(tmp_path):
    xml = _annotation(
        "2007_000001",
        [
            _object("person", parts=("head", "hand", "cat")),  # a part named like a class is still a part
            _object("dog", difficult=True),
            _object(" bicycle\n", truncated=True),
            _object("background"),
            _object("Person"),  # names are matched exactly, as the reference does
        ],
    )
    path = tmp_path / "a.xml"
    path.write_text(xml)
    label = labels_from_xml(path, VOC_CLASSES)
    assert label.dtype == np.uint8 and label.shape == (20,)
    assert [VOC_CLASSES[k] for k in np.flatnonzero(label)] == ["bicycle", "dog", "person"]


def test_xml_custom_class_names(tmp_path):
    path = tmp_path / "a.xml"
    path.write_text(_annotation("x", [_object("square"), _object("person")]))
    assert labels_from_xml(path, ["circle", "square"]).tolist() == [0, 1]


def test_corrupt_xml_names_its_path(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text("<annotation><object><name>dog</name>")
    with pytest.raises(RecamInputError, match="bad.xml"):
        labels_from_xml(path, VOC_CLASSES)


# ---- id lists and class names ------------------------------------------------------------


def test_read_id_list_keeps_strings_and_takes_deeplab_stems(tmp_path):
    path = tmp_path / "list.txt"
    path.write_text(
        "2007_000032\n\n  \n/JPEGImages/2007_000039.jpg /SegmentationClassAug/2007_000039.png\n"
        "2008_000002 extra\n0001\n"
    )
    assert read_id_list(path) == ["2007_000032", "2007_000039", "2008_000002", "0001"]
    with pytest.raises(RecamInputError, match="missing.txt"):
        read_id_list(tmp_path / "missing.txt")


def test_read_class_names(tmp_path):
    assert read_class_names(tmp_path) == list(VOC_CLASSES)
    assert len(VOC_CLASSES) == 20 and VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"
    (tmp_path / "class_names.txt").write_text("circle\nsquare\n\n")
    assert read_class_names(tmp_path) == ["circle", "square"]


# ---- errors for bad input: one line, with the path -----------------------------------------


def _mini_devkit(root: Path, *, aug: bool = True, annotations: bool = True) -> Path:
    """Three ids: train 2007_000001, val 2007_000002, SBD-only 2007_000003."""
    ids = ["2007_000001", "2007_000002", "2007_000003"]
    _write_list(root / "ImageSets" / "Segmentation" / "train.txt", ids[:1])
    _write_list(root / "ImageSets" / "Segmentation" / "val.txt", ids[1:2])
    _touch_all(root / "JPEGImages", ids, ".jpg")
    if aug:
        _touch_all(root / "SegmentationClassAug", ids, ".png")
    if annotations:
        (root / "Annotations").mkdir()
        for image_id in ids:
            (root / "Annotations" / f"{image_id}.xml").write_text(_annotation(image_id, [_object("cat")]))
    return root


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message.startswith("recam: ")
    return message


def test_mini_devkit_prepares(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012")
    stats = prepare_voc12(root, tmp_path / "out")
    assert (tmp_path / "out" / "train_aug.txt").read_text() == "2007_000001\n2007_000003\n"
    assert stats["splits"]["train_aug"]["per_class"]["cat"] == 2
    assert not (tmp_path / "out" / "test.txt").exists()  # no test.txt in the devkit, no test split


def test_missing_root(tmp_path):
    root = tmp_path / "nowhere" / "VOC2012"
    with pytest.raises(RecamInputError) as err:
        check_voc_root(root)
    assert str(root) in _one_line(err) and "dataset=synthetic" in str(err.value)
    with pytest.raises(RecamInputError) as err:
        prepare_voc12(root, tmp_path / "out")
    assert str(root) in _one_line(err)
    with pytest.raises(RecamInputError) as err:
        derive_splits(root)
    assert str(root) in _one_line(err)


def test_missing_annotations_folder(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012", annotations=False)
    with pytest.raises(RecamInputError) as err:
        check_voc_root(root)
    assert str(root / "Annotations") in _one_line(err) and "VOC2012 trainval" in str(err.value)
    with pytest.raises(RecamInputError) as err:
        derive_labels(root, ["2007_000001"], VOC_CLASSES)
    assert str(root / "Annotations") in _one_line(err)


def test_missing_xml_for_an_id(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012")
    (root / "Annotations" / "2007_000003.xml").unlink()
    with pytest.raises(RecamInputError) as err:
        prepare_voc12(root, tmp_path / "out")
    message = _one_line(err)
    assert str(root / "Annotations" / "2007_000003.xml") in message and "1 of 3" in message


def test_no_sbd_source(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012", aug=False)
    with pytest.raises(RecamInputError) as err:
        derive_splits(root)
    message = _one_line(err)
    assert str(root / "SegmentationClassAug") in message and "dataset.sbd_root" in message
    empty = tmp_path / "sbd"
    empty.mkdir()
    with pytest.raises(RecamInputError) as err:
        derive_splits(root, empty)
    assert str(empty) in _one_line(err)
    with pytest.raises(RecamInputError) as err:
        derive_splits(root, tmp_path / "no_sbd")
    assert str(tmp_path / "no_sbd") in _one_line(err)


def test_sbd_id_without_jpeg(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012")
    (root / "JPEGImages" / "2007_000003.jpg").unlink()
    with pytest.raises(RecamInputError) as err:
        derive_splits(root)
    message = _one_line(err)
    assert "1 of 2 train_aug ids" in message and "2007_000003" in message and str(root / "JPEGImages") in message


def test_missing_split_list(tmp_path):
    root = _mini_devkit(tmp_path / "VOC2012")
    (root / "ImageSets" / "Segmentation" / "val.txt").unlink()
    with pytest.raises(RecamInputError) as err:
        derive_splits(root)
    assert str(root / "ImageSets" / "Segmentation" / "val.txt") in _one_line(err)

"""The synthetic VOC-layout dataset: layout, determinism, idempotency, XML/mask agreement, statistics."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from recam.config import SyntheticParams
from recam.data.synthetic import (
    CLASS_NAMES,
    PART_NAMES,
    VERSION,
    add_ignore_band,
    annotation_xml,
    generate_synthetic,
    render_sample,
    SyntheticObject,
)
from recam.errors import RecamInputError

REPO = Path(__file__).resolve().parents[2]
SMALL = SyntheticParams(seed=3, n_train=12, n_val=6, n_extra=4)
K = len(CLASS_NAMES)


def ids_of(path: Path) -> list[str]:
    return path.read_text().split()


def xml_objects(path: Path) -> list[ET.Element]:
    return ET.parse(path).getroot().findall("object")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synthetic") / "VOC2012"
    generate_synthetic(root, SMALL)
    return root


def test_layout(small_root: Path) -> None:
    lists = small_root / "ImageSets" / "Segmentation"
    train, val = ids_of(lists / "train.txt"), ids_of(lists / "val.txt")
    assert len(train) == 12 and len(val) == 6
    assert not set(train) & set(val)
    assert ids_of(lists / "trainval.txt") == train + val
    names = ids_of(small_root / "class_names.txt")
    assert names == list(CLASS_NAMES) and len(names) == K
    assert all(len(i) == 11 and i[4] == "_" and i.replace("_", "").isdigit() for i in train + val)

    every = sorted(p.stem for p in (small_root / "JPEGImages").glob("*.jpg"))
    assert len(every) == 12 + 6 + 4
    extra = sorted(set(every) - set(train) - set(val))
    assert len(extra) == 4
    for image_id in every:
        with Image.open(small_root / "JPEGImages" / f"{image_id}.jpg") as image:
            assert image.mode == "RGB"
            size = image.size
        with Image.open(small_root / "SegmentationClass" / f"{image_id}.png") as mask_image:
            assert mask_image.mode == "P"  # palette PNG, like VOC's GT
            assert mask_image.size == size
            mask = np.array(mask_image)
        assert set(np.unique(mask)) <= set(range(K + 1)) | {255}
        assert (small_root / "Annotations" / f"{image_id}.xml").is_file()

    # train_aug = (SegmentationClassAug ∪ train) − val must give train + extra, as on VOC + SBD.
    aug = {p.stem for p in (small_root / "SegmentationClassAug").glob("*.png")}
    assert aug == set(train) | set(extra)
    assert (aug | set(train)) - set(val) == set(train) | set(extra)
    assert not list(small_root.rglob("*.tmp"))


def test_aug_mask_is_gt_without_band(small_root: Path) -> None:
    for path in sorted((small_root / "SegmentationClassAug").glob("*.png")):
        aug = np.array(Image.open(path))
        gt = np.array(Image.open(small_root / "SegmentationClass" / path.name))
        assert 255 not in aug
        assert np.array_equal(gt[gt != 255], aug[gt != 255])
        assert np.array_equal(add_ignore_band(aug), gt)


def test_xml_names_match_mask_labels(small_root: Path) -> None:
    seen_parts: set[str] = set()
    for path in sorted((small_root / "Annotations").glob("*.xml")):
        root = ET.parse(path).getroot()
        width, height = int(root.findtext("size/width")), int(root.findtext("size/height"))
        assert root.findtext("size/depth") == "3" and root.findtext("filename") == f"{path.stem}.jpg"
        mask = np.array(Image.open(small_root / "SegmentationClass" / f"{path.stem}.png"))
        assert mask.shape == (height, width)
        names = set()
        for obj in root.findall("object"):
            names.add(obj.findtext("name"))
            assert obj.findtext("difficult") == "0" and obj.findtext("truncated") in ("0", "1")
            boxes = [obj.find("bndbox")] + [part.find("bndbox") for part in obj.findall("part")]
            for box in boxes:
                xmin, ymin, xmax, ymax = (int(box.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
                assert 1 <= xmin <= xmax <= width and 1 <= ymin <= ymax <= height
            for part in obj.findall("part"):
                assert part.findtext("name") in PART_NAMES
                seen_parts.add(part.findtext("name"))
        present = {CLASS_NAMES[v - 1] for v in np.unique(mask) if 0 < v < 255}
        assert names == present, path.name
        # Label derivation must skip part names: every <name> is a class or a part, never both.
        all_names = {e.text for e in root.iter("name")}
        assert all_names <= set(CLASS_NAMES) | set(PART_NAMES)
    assert {"head", "hand"} <= seen_parts


def test_object_boxes_are_tight_around_visible_pixels() -> None:
    """Each box's four edges touch a pixel of its class (the instance's own extremes lie there)."""
    for index in range(6):
        sample = render_sample(0, index)
        for obj in sample.objects:
            xmin, ymin, xmax, ymax = obj.bbox
            inside = sample.label[ymin - 1 : ymax, xmin - 1 : xmax] == obj.class_id
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()


def test_determinism(tmp_path: Path) -> None:
    first, second, other = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthetic(first, SMALL)
    generate_synthetic(second, SMALL)
    generate_synthetic(other, SyntheticParams(seed=4, n_train=12, n_val=6, n_extra=4))
    names = sorted(p.relative_to(first) for p in first.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(second) for p in second.rglob("*") if p.is_file())
    for name in names:
        assert (first / name).read_bytes() == (second / name).read_bytes(), name
    image = Path("JPEGImages") / "2100_000001.jpg"
    assert (first / image).read_bytes() != (other / image).read_bytes()


def test_image_depends_only_on_seed_and_index(tmp_path: Path) -> None:
    """Image i is the same whatever the split sizes, and a process pool writes the same bytes."""
    generate_synthetic(tmp_path / "serial", SMALL, workers=0)
    generate_synthetic(tmp_path / "pool", SMALL, workers=2)
    generate_synthetic(tmp_path / "longer", SyntheticParams(seed=3, n_train=14, n_val=6, n_extra=4))
    for name in ("JPEGImages/2100_000003.jpg", "SegmentationClass/2100_000020.png", "Annotations/2100_000022.xml"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "pool" / name).read_bytes()
    for name in ("JPEGImages/2100_000003.jpg", "Annotations/2100_000012.xml"):
        assert (tmp_path / "serial" / name).read_bytes() == (tmp_path / "longer" / name).read_bytes()


def test_idempotent_and_overwrite(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    assert generate_synthetic(root, SMALL)["generated"]
    probe = root / "JPEGImages" / "2100_000001.jpg"
    stamp = probe.stat().st_mtime_ns
    summary_stamp = (root / "synthetic.json").stat().st_mtime_ns

    result = generate_synthetic(root, SimpleNamespace(**vars(SMALL)))  # any object with the fields
    assert not result["generated"]
    assert result["counts"] == {"train": 12, "val": 6, "extra": 4, "train_aug": 16}
    assert probe.stat().st_mtime_ns == stamp
    assert (root / "synthetic.json").stat().st_mtime_ns == summary_stamp

    assert generate_synthetic(root, SMALL, overwrite=True)["generated"]
    assert probe.stat().st_mtime_ns != stamp


def test_regenerating_smaller_removes_stale_files(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    generate_synthetic(root, SMALL)
    result = generate_synthetic(root, SyntheticParams(seed=3, n_train=5, n_val=2, n_extra=1))
    assert result["generated"]
    assert len(list((root / "JPEGImages").glob("*.jpg"))) == 8
    assert len(list((root / "SegmentationClassAug").glob("*.png"))) == 6
    assert len(list((root / "Annotations").glob("*.xml"))) == 8


def test_interrupted_generation_is_redone(tmp_path: Path) -> None:
    root = tmp_path / "VOC2012"
    generate_synthetic(root, SMALL)
    (root / "synthetic.json").unlink()  # as if killed before the last write
    assert generate_synthetic(root, SMALL)["generated"]
    summary = (root / "synthetic.json").read_text()
    assert VERSION in summary and '"n_train": 12' in summary


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(RecamInputError, match="n_val"):
        generate_synthetic(tmp_path / "a", SyntheticParams(n_val=0))
    with pytest.raises(RecamInputError, match="min_size"):
        generate_synthetic(tmp_path / "b", SyntheticParams(min_size=200, max_size=100))
    real = tmp_path / "real"
    (real / "JPEGImages").mkdir(parents=True)
    (real / "JPEGImages" / "2007_000032.jpg").write_bytes(b"")
    with pytest.raises(RecamInputError, match="not synthetic"):
        generate_synthetic(real, SMALL)


def test_ignore_band_known_answer() -> None:
    label = np.zeros((6, 6), np.uint8)
    label[2:4, 2:5] = 3
    expected = np.zeros((6, 6), np.uint8)
    expected[1:5, 1:6] = 255  # one pixel each side of the 2x3 object's boundary
    assert np.array_equal(add_ignore_band(label), expected)
    label[:, :] = 2
    assert np.array_equal(add_ignore_band(label), label)  # no boundary, no band


def test_annotation_xml_format() -> None:
    parts = (("head", (5, 4, 9, 8)), ("hand", (3, 12, 5, 14)), ("hand", (18, 12, 20, 14)))
    objects = [SyntheticObject(CLASS_NAMES.index("rider") + 1, (3, 4, 20, 30), True, parts)]
    root = ET.fromstring(annotation_xml("2100_000009", 40, 50, objects))
    assert root.tag == "annotation" and root.findtext("filename") == "2100_000009.jpg"
    assert (root.findtext("size/width"), root.findtext("size/height")) == ("50", "40")
    obj = root.find("object")
    assert obj.findtext("name") == "rider" and obj.findtext("truncated") == "1"
    assert [obj.findtext(f"bndbox/{t}") for t in ("xmin", "ymin", "xmax", "ymax")] == ["3", "4", "20", "30"]
    assert [part.findtext("name") for part in obj.findall("part")] == ["head", "hand", "hand"]
    assert obj.findtext("part/bndbox/xmax") == "9"


def test_statistics_at_default_sizes(tmp_path: Path) -> None:
    """A 60-image set: labels mixed but about half single-label, every class, band, context, parts."""
    result = generate_synthetic(tmp_path / "VOC2012", SyntheticParams(seed=0, n_train=40, n_val=10, n_extra=10))
    stats = result["statistics"]
    assert 0.3 <= stats["single_label_fraction"] <= 0.7
    assert all(count >= 3 for count in stats["images_per_class"].values()), stats["images_per_class"]
    assert stats["context"]["water|boat"] > stats["context"]["water|no boat"] + 0.3
    assert stats["context"]["sky|kite"] > stats["context"]["sky|no kite"] + 0.3
    assert stats["cooccurrence"]["horse|rider"] > 0.5

    root = Path(result["root"])
    band, pixels, sizes = 0, 0, set()
    for path in (root / "SegmentationClass").glob("*.png"):
        mask = np.array(Image.open(path))
        band += int((mask == 255).sum())
        pixels += mask.size
        sizes.add(mask.shape)
    assert 0.01 < band / pixels < 0.08  # a thin band (VOC: ~5 % of pixels are void), not a halo
    assert {(128, 160), (160, 128)} <= sizes and len(sizes) > 3  # bucketable sizes and varied ones
    assert sum(len(xml_objects(p)) for p in (root / "Annotations").glob("*.xml")) > 60


def test_docs_list_every_class() -> None:
    doc = (REPO / "docs" / "synthetic.md").read_text()
    for name in CLASS_NAMES:
        assert f"| {name} " in doc or f"| `{name}`" in doc, name

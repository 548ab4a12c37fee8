"""dataset=coco14: the spec §11.10 fixture through `stage=prepare`, labels and masks asserted exactly,
and the coco2voc contrast of §11.9."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from recam.data.coco import CATEGORY_TO_LABEL, COCO_CATEGORY_IDS, COCO_CLASSES, coco2voc_mask, reference_mask
from recam.errors import RecamInputError
from recam.io import load_label_png, load_npz
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config

pytest.importorskip("pycocotools")
from pycocotools import mask as mask_utils  # noqa: E402

SIZES = {42: (6, 8), 7: (5, 7), 100: (4, 4), 55: (6, 8)}  # JSON order of the fixture, (H, W)


def _block_rle(height: int, width: int, rows: slice, cols: slice) -> dict:
    block = np.zeros((height, width), dtype=np.uint8, order="F")
    block[rows, cols] = 1
    rle = mask_utils.encode(np.asfortranarray(block))
    return {"size": [height, width], "counts": rle["counts"].decode()}


def _poly(*points: tuple[int, int]) -> list[list[float]]:
    return [[float(c) for p in points for c in p]]


def fixture_annotations() -> list[dict]:
    """The seven annotations of spec §11.10, in file order (area = pixel count)."""
    return [
        {
            "id": 1,
            "image_id": 42,
            "category_id": 1,
            "iscrowd": 0,
            "area": 12.0,
            "segmentation": _poly((1, 1), (5, 1), (5, 4), (1, 4)),
        },
        {
            "id": 2,
            "image_id": 42,
            "category_id": 18,
            "iscrowd": 0,
            "area": 12.0,
            "segmentation": _poly((3, 2), (7, 2), (7, 5), (3, 5)),
        },
        {
            "id": 3,
            "image_id": 42,
            "category_id": 3,
            "iscrowd": 1,
            "area": 12.0,
            "segmentation": {"size": [6, 8], "counts": [0, 12, 36]},
        },  # uncompressed: columns 0-1
        {
            "id": 4,
            "image_id": 7,
            "category_id": 44,
            "iscrowd": 0,
            "area": 9.0,
            "segmentation": _poly((0, 0), (3, 0), (3, 3), (0, 3)),
        },
        {
            "id": 5,
            "image_id": 7,
            "category_id": 90,
            "iscrowd": 0,
            "area": 12.0,
            "segmentation": _block_rle(5, 7, slice(2, 5), slice(2, 6)),
        },
        {
            "id": 6,
            "image_id": 55,
            "category_id": 1,
            "iscrowd": 1,
            "area": 12.0,
            "segmentation": _block_rle(6, 8, slice(1, 4), slice(1, 5)),
        },
        {
            "id": 0,
            "image_id": 42,
            "category_id": 1,
            "iscrowd": 0,
            "area": 4.0,
            "segmentation": _poly((5, 3), (7, 3), (7, 5), (5, 5)),
        },
    ]


def build_fixture(root: Path) -> Path:
    """The fake COCO root of spec §11.10: four tiny JPEGs and instances_train2014.json."""
    (root / "train2014").mkdir(parents=True)
    (root / "annotations").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for image_id, (height, width) in SIZES.items():
        name = f"COCO_train2014_{image_id:012d}.jpg"
        if image_id == 100:
            Image.fromarray(rng.integers(0, 255, (height, width), dtype=np.uint8), mode="L").save(
                root / "train2014" / name
            )
        else:
            Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(root / "train2014" / name)
        images.append({"id": image_id, "file_name": name, "height": height, "width": width})
    categories = [{"id": c, "name": COCO_CLASSES[CATEGORY_TO_LABEL[c] - 1]} for c in (1, 3, 18, 44, 90)]
    instances = {"images": images, "annotations": fixture_annotations(), "categories": categories}
    (root / "annotations" / "instances_train2014.json").write_text(json.dumps(instances))
    return root


EXPECTED_MASKS = {
    7: np.array(
        [
            [40, 40, 40, 0, 0, 0, 0],
            [40, 40, 40, 0, 0, 0, 0],
            [40, 40, 80, 80, 80, 80, 0],
            [0, 0, 80, 80, 80, 80, 0],
            [0, 0, 80, 80, 80, 80, 0],
        ]
    ),
    42: np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0],
            [0, 1, 1, 1, 1, 0, 0, 0],
            [0, 1, 1, 17, 17, 17, 17, 0],
            [0, 1, 1, 17, 17, 1, 1, 0],
            [0, 0, 0, 17, 17, 1, 1, 0],
            [0, 0, 0, 0, 0, 0, 0, 0],
        ]
    ),
    55: np.zeros((6, 8)),
    100: np.zeros((4, 4)),
}
EXPECTED_POSITIVES = {
    "COCO_train2014_000000000007": [39, 79],
    "COCO_train2014_000000000042": [0, 2, 16],
    "COCO_train2014_000000000055": [0],
    "COCO_train2014_000000000100": [],
}


def _prepare(tmp_path: Path, *extra: str):
    coco = build_fixture(tmp_path / "MSCOCO")
    cfg = compose_config(
        [
            f"run.root={tmp_path / 'out'}",
            "run.name=coco",
            "stage=prepare",
            "dataset=coco14",
            f"dataset.coco.root={coco}",
            "dataset.coco.splits=[train2014]",
            *extra,
        ]
    )
    return cfg, run_stage(cfg), coco


def test_the_80_classes_and_the_91_to_80_map() -> None:
    assert len(COCO_CATEGORY_IDS) == len(COCO_CLASSES) == 80
    assert sorted(set(range(1, 91)) - set(COCO_CATEGORY_IDS)) == [12, 26, 29, 30, 45, 66, 68, 69, 71, 83]
    assert (CATEGORY_TO_LABEL[1], CATEGORY_TO_LABEL[13], CATEGORY_TO_LABEL[44], CATEGORY_TO_LABEL[90]) == (
        1,
        12,
        40,
        80,
    )
    assert COCO_CLASSES[CATEGORY_TO_LABEL[18] - 1] == "dog" and COCO_CLASSES[79] == "toothbrush"


def test_prepare_reproduces_the_spec_fixture(tmp_path: Path) -> None:
    cfg, stats, coco = _prepare(tmp_path)
    folder = RunDir(cfg.run).stage_dir("prepare")
    names = list(EXPECTED_POSITIVES)
    assert (folder / "train.txt").read_text().split() == names == (folder / "train_aug.txt").read_text().split()
    arrays = load_npz(folder / "cls_labels.npz")
    assert arrays["ids"].tolist() == names and arrays["labels"].shape == (4, 80)
    for row, name in enumerate(names):
        assert np.flatnonzero(arrays["labels"][row]).tolist() == EXPECTED_POSITIVES[name], name
    for image_id, expected in EXPECTED_MASKS.items():
        mask = load_label_png(coco / "mask" / "train2014" / f"{image_id}.png")
        assert mask.dtype == np.uint8
        np.testing.assert_array_equal(mask, expected.astype(np.uint8), err_msg=str(image_id))
        with Image.open(coco / "mask" / "train2014" / f"{image_id}.png") as png:
            assert png.mode == "P"  # palette PNG, raw indices = class values
        view = Path(cfg.dataset.root)
        name = f"COCO_train2014_{image_id:012d}"
        np.testing.assert_array_equal(load_label_png(view / "SegmentationClass" / f"{name}.png"), mask)
        assert (view / "JPEGImages" / f"{name}.jpg").resolve() == (coco / "train2014" / f"{name}.jpg").resolve()
    assert stats["unannotated"] == {"train2014": 1} and stats["masks_written"] == 4
    assert stats["splits"]["train"]["no_label"] == 1
    from recam.io import load_rgb

    assert load_rgb(Path(cfg.dataset.root) / "JPEGImages" / "COCO_train2014_000000000100.jpg").shape == (4, 4, 3)


def test_prepare_resumes_and_keeps_valid_masks(tmp_path: Path) -> None:
    cfg, _, coco = _prepare(tmp_path)
    masks = coco / "mask" / "train2014"
    (masks / "55.png").unlink()
    Image.fromarray(np.zeros((2, 2), np.uint8), mode="L").save(masks / "7.png")  # wrong size: redone
    before = (masks / "42.png").stat().st_mtime_ns
    stats = run_stage(
        compose_config(
            [
                f"run.root={tmp_path / 'out'}",
                "run.name=coco",
                "stage=prepare",
                "dataset=coco14",
                f"dataset.coco.root={coco}",
                "dataset.coco.splits=[train2014]",
                "run.force=true",
            ]
        )
    )
    assert stats["masks_written"] == 2 and (masks / "42.png").stat().st_mtime_ns == before
    np.testing.assert_array_equal(load_label_png(masks / "7.png"), EXPECTED_MASKS[7].astype(np.uint8))
    np.testing.assert_array_equal(load_label_png(masks / "55.png"), EXPECTED_MASKS[55].astype(np.uint8))


def test_coco2voc_protocol_gives_the_contrast_of_the_spec(tmp_path: Path) -> None:
    cfg, _, coco = _prepare(tmp_path, "dataset.protocol=coco2voc")
    folder = RunDir(cfg.run).stage_dir("prepare")
    assert "COCO_train2014_000000000100" not in (folder / "train.txt").read_text()  # unannotated: skipped
    masks = coco / "mask_coco2voc" / "train2014"
    mask42, mask7 = load_label_png(masks / "42.png"), load_label_png(masks / "7.png")
    np.testing.assert_array_equal(mask42[:, 0], [3] * 6)  # car fills column 0 ...
    np.testing.assert_array_equal(mask42[:, 1], [3, 1, 1, 1, 3, 3])  # ... and column 1 except the person's rows
    assert mask42[2, 3] == 1 and mask42[3, 5] == 1  # equal area: the person, earlier, wins
    assert mask7[2, 2] == 40  # the bottle keeps (2, 2)
    assert (load_label_png(masks / "55.png")[1:4, 1:5] == 1).all()  # the crowd person block is drawn
    assert not (masks / "100.png").exists()


def test_rules_on_direct_calls_and_unknown_category() -> None:
    anns = [a for a in fixture_annotations() if a["image_id"] == 42]
    np.testing.assert_array_equal(reference_mask(6, 8, anns), EXPECTED_MASKS[42])
    assert coco2voc_mask(6, 8, []).sum() == 0
    with pytest.raises(RecamInputError, match="category_id 12"):
        reference_mask(6, 8, [{**anns[0], "category_id": 12}])


def test_missing_annotation_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "MSCOCO").mkdir()
    cfg = compose_config(
        [f"run.root={tmp_path / 'out'}", "stage=prepare", "dataset=coco14", f"dataset.coco.root={tmp_path / 'MSCOCO'}"]
    )
    with pytest.raises(RecamInputError, match="instances_train2014.json does not exist - download") as err:
        run_stage(cfg)
    assert "\n" not in str(err.value)


def test_comparison_with_the_authors_label_file(tmp_path: Path) -> None:
    theirs = np.zeros((4, 80))
    theirs[0, [39, 79]] = 1.0
    theirs[1, [0, 2, 16]] = 1.0
    theirs[2, 0] = 0.0  # e.g. a file that did not count the crowd-only person of image 55
    np.save(tmp_path / "train_labels.npy", theirs)
    _, stats, _ = _prepare(tmp_path, f"dataset.coco.reference_labels={tmp_path / 'train_labels.npy'}")
    assert stats["reference_labels"] == {
        "rows": 4,
        "zero_rows": 2,
        "mismatched_rows": 1,
        "first_mismatches": ["COCO_train2014_000000000055"],
    }


def test_unlabelled_image_gets_an_all_background_ir_label_without_crf(monkeypatch) -> None:
    from recam.masks import ir_labels

    def no_crf(*args, **kwargs):
        raise AssertionError("the CRF must not run for an image without labels")

    monkeypatch.setattr(ir_labels, "crf_from_labels", no_crf)
    label = ir_labels.ir_label(np.zeros((4, 4, 3), np.uint8), np.zeros((0, 4, 4), np.float32), np.zeros(0, np.int64))
    np.testing.assert_array_equal(label, np.zeros((4, 4), np.uint8))


def test_uncompressed_rle_round_trips_through_pycocotools() -> None:
    from recam.data.synthetic import uncompressed_rle

    rng = np.random.default_rng(0)
    for shape in [(5, 7), (6, 8), (1, 1)]:
        for fill in (0.0, 0.5, 1.0):
            binary = (rng.random(shape) < fill).astype(np.uint8)
            rle = uncompressed_rle(binary)
            assert sum(rle["counts"]) == binary.size
            np.testing.assert_array_equal(mask_utils.decode(mask_utils.frPyObjects(rle, *shape)), binary)

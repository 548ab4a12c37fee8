"""`stage=all` end to end on tiny COCO-format and folder datasets (CPU, debug=tiny)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recam.data.synthetic import SYNTHETIC_COCO_IDS, generate_synthetic_coco
from recam.config import SyntheticParams
from recam.errors import RecamInputError
from recam.io import read_json, load_label_png, load_npz
from recam.pipeline import run_stage
from recam.plan import plan_steps, step_folder
from recam.rundir import RunDir
from tests.conftest import compose_config

pytest.importorskip("pycocotools")

TINY = SyntheticParams(seed=0, n_train=10, n_val=4, n_extra=2, min_size=48, max_size=64)


@pytest.fixture(scope="module")
def coco_all(tmp_path_factory):
    base = tmp_path_factory.mktemp("coco")
    made = generate_synthetic_coco(base / "MSCOCO", TINY)
    cfg = compose_config(
        [
            f"run.root={base / 'out'}",
            "run.name=coco",
            "debug=tiny",
            "dataset=coco14",
            f"dataset.coco.root={base / 'MSCOCO'}",
            "stage=all",
        ]
    )
    return cfg, made, run_stage(cfg)


def test_synthetic_coco_json_has_polygons_rles_and_crowd(coco_all) -> None:
    cfg, made, _ = coco_all
    instances = json.loads((Path(cfg.dataset.coco.root) / "annotations" / "instances_train2014.json").read_text())
    kinds = {
        (
            "polygon"
            if isinstance(a["segmentation"], list)
            else "rle"
            if isinstance(a["segmentation"]["counts"], list)
            else "compressed"
        )
        for a in instances["annotations"]
    }
    assert kinds == {"polygon", "rle", "compressed"}
    assert any(a["iscrowd"] for a in instances["annotations"])
    assert {a["category_id"] for a in instances["annotations"]} <= set(SYNTHETIC_COCO_IDS)
    assert made["images"] == {"train2014": 12, "val2014": 4}
    assert not any(a["image_id"] == 1 for a in instances["annotations"])  # the unannotated image


def test_stage_all_on_coco14_runs_every_step(coco_all) -> None:
    cfg, _, results = coco_all
    rundir = RunDir(cfg.run)
    for stage, overrides in plan_steps([], "coco14"):  # the plan without the box steps
        assert (step_folder(rundir, stage, overrides) / "DONE").is_file(), (stage, overrides)
    prepared = rundir.stage_dir("prepare")
    train = (prepared / "train.txt").read_text().split()
    assert train == [f"COCO_train2014_{i:012d}" for i in range(1, 13)]  # ascending id, JSON was descending
    # The unannotated image: empty seed, all-0 IR label and pseudo mask (spec §11.5).
    first = train[0]
    seed = load_npz(rundir.stage_dir("seeds", "recam") / f"{first}.npz")
    assert seed["keys"].size == 0 and seed["high_res"].shape[0] == 0
    assert load_label_png(rundir.stage_dir("masks", "irn") / f"{first}.png").max() == 0
    assert results["eval_seeds/recam"]["images"] == 12
    assert len(results["eval_seeds/recam"]["iou_fixed"]) == 81  # background + 80 classes
    assert 0.0 <= results["eval_masks/irn"]["miou_fixed"] <= 1.0


def build_folder(root: Path, count: int = 14) -> Path:
    """A user folder: images (JPEG and PNG), labels.csv with a header, class_names.txt, index-PNG masks."""
    from PIL import Image

    from recam.data.synthetic import CLASS_NAMES, render_sample

    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = ["id,labels"]
    for index in range(count):
        sample = render_sample(0, index, 48, 64)
        image_id = f"img{index:03d}"
        suffix = ".png" if index % 4 == 0 else ".jpg"
        Image.fromarray(sample.image).save(root / "images" / f"{image_id}{suffix}")
        Image.fromarray(sample.label, mode="L").save(root / "masks" / f"{image_id}.png")
        names = [CLASS_NAMES[c - 1] for c in sorted(int(v) for v in np.unique(sample.label) if v)]
        rows.append(f"{image_id},{';'.join(names)}")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    (root / "class_names.txt").write_text("\n".join(CLASS_NAMES) + "\n")
    return root


def _folder_config(base: Path, *extra: str):
    return compose_config(
        [
            f"run.root={base / 'out'}",
            "run.name=folder",
            "debug=tiny",
            "dataset=folder",
            f"dataset.folder.root={base / 'mine'}",
            "dataset.folder.masks=masks",
            *extra,
        ]
    )


def test_stage_all_on_a_folder_dataset(tmp_path: Path) -> None:
    build_folder(tmp_path / "mine")
    cfg = _folder_config(tmp_path, "stage=all", "dataset.folder.val_fraction=0.3")
    results = run_stage(cfg)
    rundir = RunDir(cfg.run)
    for stage, overrides in plan_steps([], "folder"):  # the plan without the box steps
        assert (step_folder(rundir, stage, overrides) / "DONE").is_file(), (stage, overrides)
    prepared = rundir.stage_dir("prepare")
    train, val = (prepared / "train.txt").read_text().split(), (prepared / "val.txt").read_text().split()
    assert len(val) == 4 and len(train) == 10 and not set(train) & set(val)  # round(0.3 * 14) in val
    assert results["eval_seeds/cam"]["images"] == 10 and len(results["eval_seeds/cam"]["iou_fixed"]) == 9
    assert set(results["eval_seeds/cam"]["miou_reference"]) == {"0.15", "0.21"}
    sweep = results["eval_seeds/cam"]["sweep"]
    assert results["eval_seeds/cam"]["miou_reference"]["0.21"] == sweep["0.21"]
    # the same seed gives the same split; another seed another one
    again = _folder_config(tmp_path, "stage=prepare", "run.name=again", "dataset.folder.val_fraction=0.3")
    run_stage(again)
    assert (RunDir(again.run).stage_dir("prepare") / "val.txt").read_text().split() == val


@pytest.mark.parametrize(
    "breakage, message",
    [
        (lambda r: (r / "labels.csv").write_text("id,labels\nghost,disc\n"), "'ghost' but .* holds no ghost.jpg"),
        (lambda r: (r / "labels.csv").write_text("img000,unicorn\n"), "labels 'img000' with 'unicorn', not a class"),
        (lambda r: (r / "labels.csv").write_text("img000,disc\nimg000,star\n"), "line 2 repeats the id 'img000'"),
        (
            lambda r: shutil.copy(r / "images" / "img001.jpg", r / "images" / "img001.png"),
            "two images of the id 'img001'",
        ),
        (lambda r: (r / "labels.json").write_text('{"img000": ["disc"], "img000": []}'), "repeats the id 'img000'"),
        (
            lambda r: (
                __import__("PIL.Image").Image.fromarray(np.zeros((5, 5), np.uint8)).save(r / "masks" / "img002.png")
            ),
            "mask .*img002.png is 5x5 but its image",
        ),
        (
            lambda r: (
                (r / "splits").mkdir(),
                (r / "splits" / "train.txt").write_text("img000\n"),
                (r / "splits" / "val.txt").write_text("\n"),
            ),
            "val.txt is empty",
        ),
    ],
)
def test_folder_inconsistencies_are_one_line_errors(tmp_path: Path, breakage, message) -> None:
    root = build_folder(tmp_path / "mine", count=4)
    breakage(root)
    extra = ["dataset.folder.splits=splits"] if (root / "splits").is_dir() else []
    extra += ["dataset.folder.labels=labels.json"] if (root / "labels.json").is_file() else []
    with pytest.raises(RecamInputError, match=message) as err:
        run_stage(_folder_config(tmp_path, "stage=prepare", *extra))
    assert "\n" not in str(err.value)


def test_folder_without_ground_truth_to_pseudo_masks(tmp_path: Path) -> None:
    """The README's three commands: prepare, train (cam + recam), then seeds -> IR labels -> IRN -> masks,
    every threshold chosen without ground truth (there is none)."""
    root = build_folder(tmp_path / "mine", count=10)
    shutil.rmtree(root / "masks")
    base = [
        f"run.root={tmp_path / 'out'}",
        "run.name=mine",
        "debug=tiny",
        "dataset=folder",
        f"dataset.folder.root={root}",
        "irn.val_split=null",
        "ir_labels.fg_threshold=auto",
        "ir_labels.bg_threshold=auto",
        "masks.bg_threshold=auto",
        "thresholds.sample_size=4",
    ]
    run_stage(compose_config([*base, "stage=prepare"]))
    run_stage(compose_config([*base, "stage=all", "stage.steps=[cam,recam]"]))
    run_stage(compose_config([*base, "stage=all", "stage.steps=[seeds/recam,ir_labels,irn,masks/irn]"]))
    rundir = RunDir(compose_config(base).run)
    train = (rundir.stage_dir("prepare") / "train_aug.txt").read_text().split()
    masks = sorted(p.stem for p in rundir.stage_dir("masks", "irn").glob("*.png"))
    assert masks == sorted(train) and len(train) == 8
    assert all(load_label_png(rundir.stage_dir("masks", "irn") / f"{i}.png").max() <= 8 for i in train)
    chosen = read_json(rundir.stage_dir("masks", "irn") / "results.json")["auto"]
    assert 0 < chosen["threshold"] < 1 and "selector" in chosen

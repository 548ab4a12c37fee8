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
from recam.io import load_label_png, load_npz
from recam.pipeline import PLAN, RunDir, run_stage, step_folder
from tests.conftest import compose_config

pytest.importorskip("pycocotools")

TINY = SyntheticParams(seed=0, n_train=10, n_val=4, n_extra=2, min_size=48, max_size=64)


@pytest.fixture(scope="module")
def coco_all(tmp_path_factory):
    base = tmp_path_factory.mktemp("coco")
    made = generate_synthetic_coco(base / "MSCOCO", TINY)
    cfg = compose_config([f"run.root={base / 'out'}", "run.name=coco", "debug=tiny", "dataset=coco14",
                          f"dataset.coco.root={base / 'MSCOCO'}", "stage=all"])
    return cfg, made, run_stage(cfg)


def test_synthetic_coco_json_has_polygons_rles_and_crowd(coco_all) -> None:
    cfg, made, _ = coco_all
    instances = json.loads((Path(cfg.dataset.coco.root) / "annotations" / "instances_train2014.json").read_text())
    kinds = {("polygon" if isinstance(a["segmentation"], list) else
              "rle" if isinstance(a["segmentation"]["counts"], list) else "compressed") for a in instances["annotations"]}
    assert kinds == {"polygon", "rle", "compressed"}
    assert any(a["iscrowd"] for a in instances["annotations"])
    assert {a["category_id"] for a in instances["annotations"]} <= set(SYNTHETIC_COCO_IDS)
    assert made["images"] == {"train2014": 12, "val2014": 4}
    assert not any(a["image_id"] == 1 for a in instances["annotations"])   # the unannotated image


def test_stage_all_on_coco14_runs_every_step(coco_all) -> None:
    cfg, _, results = coco_all
    rundir = RunDir(cfg.run)
    for stage, overrides in PLAN:
        assert (step_folder(rundir, stage, overrides) / "DONE").is_file(), (stage, overrides)
    prepared = rundir.stage_dir("prepare")
    train = (prepared / "train.txt").read_text().split()
    assert train == [f"COCO_train2014_{i:012d}" for i in range(1, 13)]   # ascending id, JSON was descending
    # The unannotated image: empty seed, all-0 IR label and pseudo mask (spec §11.5).
    first = train[0]
    seed = load_npz(rundir.stage_dir("seeds", "recam") / f"{first}.npz")
    assert seed["keys"].size == 0 and seed["high_res"].shape[0] == 0
    assert load_label_png(rundir.stage_dir("masks", "irn") / f"{first}.png").max() == 0
    assert results["eval_seeds/recam"]["images"] == 12
    assert len(results["eval_seeds/recam"]["iou_fixed"]) == 81   # background + 80 classes
    assert 0.0 <= results["eval_masks/irn"]["miou_fixed"] <= 1.0

"""`threshold=auto` on the tiny run: chosen without ground truth, recorded next to the oracle.

The mask chain (ir_labels, masks/crf, masks/irn) runs on a copy of the dataset that has no mask
folder at all, so an auto choice that opened a mask would fail here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from recam.config import threshold_setting
from recam.errors import RecamInputError
from recam.io import load_npz, load_rgb
from recam.pipeline import run_stage
from recam.rundir import RunDir
from recam.stages.auto_thresholds import check_thresholds
from recam.thresholds import ScoreMap, candidate_grid, linked_thresholds, sample_ids, select_threshold
from tests.conftest import compose_config


def _images_only(cfg, tmp_path: Path) -> Path:
    """A copy of the tiny dataset with its images and nothing else (no ground truth)."""
    root = tmp_path / "images_only" / "VOC2012"
    shutil.copytree(Path(cfg.dataset.root) / "JPEGImages", root / "JPEGImages")
    return root


def _overrides(cfg, tmp_path: Path, root, *extra: str) -> list[str]:
    rundir = RunDir(cfg.run)
    return [
        f"run.root={tmp_path / 'outputs'}",
        "run.name=auto",
        f"dataset.root={root}",
        "debug=tiny",
        *(f"+run.inputs.{s}={rundir.stage_dir(s)}" for s in ("prepare", "cam", "seeds", "irn")),
        *extra,
    ]


def _expected_seed_threshold(cfg, method: str) -> float:
    """The selector run by hand on the sample the config names."""
    rundir = RunDir(cfg.run)
    ids = (rundir.stage_dir("prepare") / f"{cfg.thresholds.split}.txt").read_text().split()
    maps = []
    for image_id in sample_ids(ids, cfg.thresholds.sample_size, cfg.thresholds.seed):
        seed = load_npz(rundir.stage_dir("seeds", method) / f"{image_id}.npz")
        maps.append(
            ScoreMap(
                seed["high_res"].astype(np.float32),
                seed["keys"],
                load_rgb(Path(cfg.dataset.root) / "JPEGImages" / f"{image_id}.jpg"),
            )
        )
    return select_threshold(cfg.thresholds.selector, maps, candidate_grid(*cfg.thresholds.grid)).threshold


def test_auto_thresholds_without_ground_truth_and_next_to_the_oracle(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    expected = _expected_seed_threshold(cfg, "cam")
    # Seeds: eval_seeds needs the ground truth for its oracle sweep, not for the auto choice.
    results = run_stage(
        compose_config(
            _overrides(
                cfg,
                tmp_path,
                cfg.dataset.root,
                "stage=eval_seeds",
                "eval_seeds.method=cam",
                "eval_seeds.threshold=auto",
            )
        )
    )
    assert results["threshold_auto"] == results["threshold_fixed"] == expected
    assert results["auto"]["selector"] == cfg.thresholds.selector == "consensus"
    assert results["miou_fixed"] == pytest.approx(results["sweep"][f"{expected:.2f}"])
    assert results["gap"] == pytest.approx(results["miou"] - results["miou_fixed"]) and results["gap"] >= 0

    # The mask chain on images alone: no mask folder exists under this dataset root.
    root = _images_only(cfg, tmp_path)
    common = ["ir_labels.seeds=cam", "masks.seeds=cam"]
    ir = run_stage(
        compose_config(
            _overrides(
                cfg,
                tmp_path,
                root,
                "stage=ir_labels",
                *common,
                "ir_labels.fg_threshold=auto",
                "ir_labels.bg_threshold=auto",
            )
        )
    )
    linked = linked_thresholds(expected)
    assert (ir["fg_threshold"], ir["bg_threshold"]) == (linked["fg"], linked["bg"])
    assert ir["auto"]["seed_threshold"] == expected
    crf = run_stage(
        compose_config(
            _overrides(cfg, tmp_path, root, "stage=masks", "masks.method=crf", *common, "masks.seed_threshold=auto")
        )
    )
    assert crf["threshold"] == expected and crf["auto"]["threshold"] == expected
    irn = run_stage(
        compose_config(
            _overrides(cfg, tmp_path, root, "stage=masks", "masks.method=irn", *common, "masks.bg_threshold=auto")
        )
    )
    assert irn["threshold"] == irn["auto"]["threshold"] and 0.05 <= irn["threshold"] <= 0.95

    # eval_masks (with the ground truth again) carries the choice; the walk's sweep gives the gap.
    evaluated = run_stage(
        compose_config(
            _overrides(
                cfg,
                tmp_path,
                cfg.dataset.root,
                "stage=eval_masks",
                "eval_masks.method=irn",
                *common,
                "masks.bg_threshold=auto",
            )
        )
    )
    assert evaluated["threshold_auto"] == irn["threshold"]
    assert evaluated["gap"] == pytest.approx(evaluated["miou"] - evaluated["miou_auto"]) and evaluated["gap"] >= 0
    summary = json.loads((tmp_path / "outputs" / "auto" / "summary.json").read_text())
    assert summary["eval_seeds/cam"]["threshold_auto"] == expected
    assert summary["eval_masks/irn"]["selector"] == "consensus"
    report = run_stage(compose_config(_overrides(cfg, tmp_path, cfg.dataset.root, "stage=report")))["report"]
    assert "without ground truth" in report and "eval_masks/irn" in report


@pytest.mark.parametrize("value", [1.5, 0.0, "automatic", "0.3x"])
def test_a_bad_threshold_value_is_one_line_naming_the_key(value) -> None:
    with pytest.raises(RecamInputError, match="eval_seeds.threshold"):
        threshold_setting(value, "eval_seeds.threshold")
    assert threshold_setting("auto", "k") == "auto" and threshold_setting(0.3, "k") == 0.3


@pytest.mark.parametrize(
    "override,key",
    [
        ("thresholds.selector=oracle", "thresholds.selector"),
        ("thresholds.grid=[0.5,0.4,0.01]", "thresholds.grid"),
        ("thresholds.sample_size=0", "thresholds.sample_size"),
    ],
)
def test_bad_selector_settings_fail_with_one_line(override: str, key: str) -> None:
    with pytest.raises(RecamInputError, match=key):
        check_thresholds(compose_config([override]).thresholds)

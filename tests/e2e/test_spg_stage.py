"""spg -> seeds/spg -> eval_loc on the tiny synthetic set: trains, exports, scores, skips when done."""

from __future__ import annotations

import numpy as np

from recam.data.wsol import voc_boxes
from recam.eval.localization import best_iou, foreground, largest_component_box
from recam.io import load_npz, read_json
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config, link_copy


def test_spg_train_export_eval_loc(tmp_path):
    base = [
        f"run.root={tmp_path / 'outputs'}",
        "run.name=tiny_spg",
        f"dataset.root={tmp_path / 'data' / 'VOC2012'}",
        "dataset=synthetic",
        "debug=tiny",
    ]
    run_stage(compose_config([*base, "stage=prepare"]))
    trained = run_stage(compose_config([*base, "stage=spg"]))
    assert trained["steps_per_epoch"] == 2 and np.isfinite(trained["history"][-1]["train_loss"])
    for part in ("cls", "side4", "side3", "back"):
        assert np.isfinite(trained["history"][-1][f"train_{part}"])
    # done: a second call skips and returns the same results
    assert run_stage(compose_config([*base, "stage=spg"]))["history"] == trained["history"]

    cfg = compose_config([*base, "stage=seeds", "seeds.method=spg", "seeds.split=train"])
    run_stage(cfg)
    rundir = RunDir(cfg.run)
    seeds = rundir.stage_dir("seeds", "spg")
    ids = (rundir.stage_dir("prepare") / "train.txt").read_text().split()
    names = (rundir.stage_dir("prepare") / "class_names.txt").read_text().split()
    seed = load_npz(seeds / f"{ids[0]}.npz")
    assert seed["scores"].shape == (len(names),) and seed["high_res"].shape[0] == len(seed["keys"])
    assert seed["high_res"].max() < 1 and seed["high_res"].min() >= 0

    cfg = compose_config(
        [*base, "stage=eval_loc", "eval_loc.method=spg", "eval_loc.split=train", "eval_loc.sweep=[0.2,0.6,0.2]"]
    )
    res = run_stage(cfg)
    # recompute GT-known loc at tau = 0.4 from the files with the pure functions
    correct, pairs = 0, 0
    for image_id in ids:
        seed, boxes = load_npz(seeds / f"{image_id}.npz"), voc_boxes(cfg.dataset.root, image_id, names)
        for j, k in enumerate(seed["keys"].tolist()):
            if k in boxes:
                box, _ = largest_component_box(foreground(seed["high_res"][j], 0.4))
                correct += best_iou(box, boxes[k]) >= 0.5
                pairs += 1
    assert res["pairs"] == pairs > 0
    assert abs(res["loc_sweep"]["0.40"] - correct / pairs) < 1e-12
    assert 0 <= res["top1_loc"] <= res["top5_loc"] <= res["gt_known_loc"] <= 1
    summary = read_json(rundir.summary_path)["eval_loc/spg"]
    assert summary["gt_known_loc"] == res["gt_known_loc"] and "maxboxacc_v2" in summary
    # the seed format is the CAM seeds': the mIoU and IR-label stages read SPG seeds unchanged
    scored = run_stage(compose_config([*base, "stage=eval_seeds", "eval_seeds.method=spg", "eval_seeds.split=train"]))
    assert 0 <= scored["miou"] <= 1
    run_stage(compose_config([*base, "stage=ir_labels", "ir_labels.seeds=spg", "ir_labels.split=train"]))
    assert len(list(rundir.stage_dir("ir_labels").glob("*.png"))) == len(ids)


def test_plan_scores_cam_and_recam_boxes(tiny_all):
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    summary = read_json(rundir.summary_path)
    for method in ("cam", "recam"):
        entry = summary[f"eval_loc/{method}"]
        assert 0 <= entry["gt_known_loc"] <= 1 and 0 <= entry["maxboxacc_v2"] <= 1
        assert "top1_loc" not in entry  # CAM / ReCAM seeds hold no class scores
    assert "## Localization" in (rundir.root / "report.md").read_text()


def test_wsol_table(tiny_all, tmp_path, capsys):
    from pathlib import Path

    import pytest

    from recam.errors import RecamInputError

    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    base = [
        f"run.root={tmp_path}",
        "run.name=copy",
        f"dataset.root={cfg.dataset.root}",
        "dataset=synthetic",
        "debug=tiny",
        "stage=wsol",
        "wsol.family=[gradcam]",
        "wsol.max_images=2",
    ]
    res = run_stage(compose_config(base))
    assert list(res["methods"]) == ["cam", "recam", "spg", "gradcam"]
    assert res["methods"]["spg"]["top1_loc"] is not None and res["methods"]["cam"]["top1_loc"] is None
    assert res["methods"]["gradcam"]["images"] == 2 and res["methods"]["gradcam"]["subset"]
    # the numbers are those of the eval stages' results
    copy = RunDir(compose_config(base).run)
    assert (
        res["methods"]["cam"]["gt_known_loc"]
        == read_json(copy.stage_dir("eval_loc", "cam") / "results.json")["gt_known_loc"]
    )
    assert "| SPG |" in capsys.readouterr().out
    assert run_stage(compose_config(base))["methods"] == res["methods"]  # done: skipped
    with pytest.raises(RecamInputError, match="wsol.family"):
        run_stage(compose_config([*base, "wsol.family=[spg]"]))


def test_eval_loc_cam_dt_box_protocol(tiny_all, tmp_path):
    from pathlib import Path

    from recam.eval.localization import dt_box, saved_heatmap

    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    base = [
        f"run.root={tmp_path}",
        "run.name=copy",
        f"dataset.root={cfg.dataset.root}",
        "dataset=synthetic",
        "debug=tiny",
        "stage=eval_loc",
        "eval_loc.method=cam",
        "eval_loc.protocol=cam_dt_box",
        "eval_loc.dt_box_thresholds=[20,100,110]",
    ]
    res = run_stage(compose_config(base))
    rundir = RunDir(compose_config(base).run)
    simple = read_json(RunDir(cfg.run).stage_dir("eval_loc", "cam") / "results.json")
    assert res["simple_gt_known_loc"] == simple["gt_known_loc"] and res["threshold"] is None
    names = (rundir.stage_dir("prepare") / "class_names.txt").read_text().split()
    correct = pairs = 0
    for image_id in (rundir.stage_dir("prepare") / "train.txt").read_text().split():
        seed = load_npz(rundir.stage_dir("seeds", "cam") / f"{image_id}.npz")
        boxes = voc_boxes(cfg.dataset.root, image_id, names)
        for j, k in enumerate(seed["keys"].tolist()):
            if k in boxes:
                box = dt_box(saved_heatmap(seed["high_res"][j].astype(np.float32)), [20, 100, 110])
                correct += best_iou(box, boxes[k]) >= 0.5
                pairs += 1
    assert res["pairs"] == pairs and abs(res["gt_known_loc"] - correct / pairs) < 1e-12


def test_prepare_cub_dataset(tmp_path):
    import pytest

    from recam.errors import RecamInputError
    from tests.unit.test_spg import fake_cub

    classes = fake_cub(tmp_path / "CUB_200_2011")
    base = [
        f"run.root={tmp_path / 'outputs'}",
        "run.name=cub",
        "dataset=cub",
        "debug=tiny",
        "stage=prepare",
        f"dataset.root={tmp_path / 'layout'}",
    ]
    stats = run_stage(compose_config([*base, f"dataset.cub_root={tmp_path / 'CUB_200_2011'}"]))
    assert stats["splits"]["train"]["images"] == 2 and stats["splits"]["val"]["images"] == 2
    rundir = RunDir(compose_config(base).run)
    assert (rundir.stage_dir("prepare") / "class_names.txt").read_text().split() == classes
    with pytest.raises(RecamInputError, match="images.txt"):
        run_stage(compose_config([*base, "run.name=cub2", f"dataset.cub_root={tmp_path / 'nowhere'}"]))

"""All stages on a tiny synthetic set on CPU: prepare -> cam -> seeds/eval (CAM) -> recam ->
seeds/eval (ReCAM); resume, skip-when-done and the summary contract."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recam.engine.checkpoint import load_checkpoint, load_model_state
from recam.errors import RecamInputError
from recam.io import load_npz
from recam.models.cam_net import build_cam_net
from recam.pipeline import run_stage
from recam.plan import plan_steps, step_folder, step_label
from recam.rundir import RunDir
from tests.conftest import compose_config, link_copy

PLAN = plan_steps([], "synthetic")  # the tiny run loads no pretrained backbone: no pretrain step


def test_all_stages_write_their_artifacts(tiny_all) -> None:
    cfg, results = tiny_all
    rundir = RunDir(cfg.run)
    for stage, overrides in PLAN:
        folder = step_folder(rundir, stage, overrides)
        assert (folder / "DONE").is_file(), folder
        assert (folder / "config.json").is_file() and (folder / "inputs.json").is_file()
    summary = json.loads(rundir.summary_path.read_text())
    for key in ("eval_seeds/cam", "eval_seeds/recam"):
        assert 0.0 <= summary[key]["miou"] <= 1.0
        assert 0.05 <= summary[key]["threshold"] <= 0.60
    regime = summary["report/regime"]  # the issue-12 targets, as numbers (the report prints them)
    assert regime["cam_best_t"] == summary["eval_seeds/cam"]["threshold"]
    gain = 100 * (summary["eval_seeds/recam"]["miou"] - summary["eval_seeds/cam"]["miou"])
    assert regime["gain_best_t"] == pytest.approx(gain, abs=1e-5) and regime["met"]["gain_best_t"] == (gain >= 2)
    assert regime["targets_met"] == sum(regime["met"].values()) and regime["targets"] == len(regime["met"])
    report = (rundir.root / "report.md").read_text()
    results, timings = report.split("## Time per stage")
    assert results.count("| eval_seeds/") == 2 and results.count("| eval_masks/") == 2
    assert all(f"| {step_label(stage, overrides)} |" in timings for stage, overrides in PLAN)


def test_seed_files_follow_the_spec_format(tiny_all) -> None:
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    prepared = rundir.stage_dir("prepare")
    ids = (prepared / "train_aug.txt").read_text().split()
    labels = dict(zip(*[v for v in np.load(prepared / "cls_labels.npz").values()]))
    for method in ("cam", "recam"):
        for image_id in ids[:4]:
            seed = load_npz(rundir.stage_dir("seeds", method) / f"{image_id}.npz")
            assert seed["keys"].dtype == np.int64
            np.testing.assert_array_equal(seed["keys"], np.flatnonzero(labels[image_id]))
            n, h4, w4 = seed["cam"].shape
            _, height, width = seed["high_res"].shape
            assert n == len(seed["keys"]) and (h4, w4) == ((height - 1) // 4 + 1, (width - 1) // 4 + 1)
            assert seed["cam"].max() < 1.0 and seed["cam"].min() >= 0.0


def test_checkpoint_loads_back_and_matches(tiny_all) -> None:
    cfg, _ = tiny_all
    path = RunDir(cfg.run).stage_dir("cam") / "model.pt"
    checkpoint = load_checkpoint(path)
    model = build_cam_net(arch=cfg.model.arch, num_classes=len(checkpoint["class_names"]), fixed_bn=cfg.model.fixed_bn)
    load_model_state(model, checkpoint["model"], path)
    model.eval()
    x = torch.randn(1, 3, 48, 48)
    assert model(x)["logits"].shape == (1, len(checkpoint["class_names"]))
    last = load_checkpoint(path.parent / "checkpoints" / "last.pt")
    assert last["epoch"] == cfg.cam.epochs - 1 and len(last["history"]) == cfg.cam.epochs
    assert set(last) >= {"model", "optimizer", "scheduler", "epoch", "step", "rng", "config", "class_names"}
    recam_dir = RunDir(cfg.run).stage_dir("recam") / "checkpoints"
    assert sorted(p.name for p in recam_dir.glob("epoch_*.pt")) == [
        f"epoch_{e + 1}.pt" for e in range(cfg.recam.epochs)
    ]


def test_second_run_skips_up_to_date_stages(tiny_all) -> None:
    cfg, _ = tiny_all
    done = RunDir(cfg.run).stage_dir("cam") / "DONE"
    before = done.read_text()
    run_stage(
        compose_config(
            [f"run.root={cfg.run.root}", "run.name=tiny", f"dataset.root={cfg.dataset.root}", "debug=tiny", "stage=cam"]
        )
    )
    assert done.read_text() == before


def test_second_stage_all_skips_every_step_including_the_pictures(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]
    rundir = RunDir(compose_config(overrides).run)
    marks = {
        label: (step_folder(rundir, step, extra) / "DONE").read_text()
        for step, extra in PLAN
        for label in [step_label(step, extra)]
    }
    run_stage(compose_config([*overrides, "stage=all"]))
    assert {
        label: (step_folder(rundir, step, extra) / "DONE").read_text()
        for step, extra in PLAN
        for label in [step_label(step, extra)]
    } == marks
    # A changed mask folder is an input of the pictures: visualize alone runs again.
    run_stage(compose_config([*overrides, "stage=masks", "masks.method=crf", "masks.seed_threshold=0.4"]))
    before = (rundir.stage_dir("visualize") / "DONE").read_text()
    run_stage(compose_config([*overrides, "stage=visualize"]))
    assert (rundir.stage_dir("visualize") / "DONE").read_text() != before


def test_changed_config_reruns_the_stage(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]
    rundir = RunDir(compose_config(overrides).run)
    before = (rundir.stage_dir("eval_seeds", "cam") / "DONE").read_text()
    run_stage(compose_config([*overrides, "stage=eval_seeds", "eval_seeds.method=cam", "eval_seeds.threshold=0.3"]))
    result = json.loads((rundir.stage_dir("eval_seeds", "cam") / "results.json").read_text())
    assert result["threshold_fixed"] == 0.3
    assert (rundir.stage_dir("eval_seeds", "cam") / "DONE").read_text() != before


def test_interrupted_seed_export_resumes_to_the_same_files(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [
        f"run.root={tmp_path}",
        "run.name=copy",
        f"dataset.root={cfg.dataset.root}",
        "debug=tiny",
        "stage=seeds",
        "seeds.method=cam",
    ]
    folder = RunDir(compose_config(overrides).run).stage_dir("seeds", "cam")
    clean = {p.name: load_npz(p) for p in folder.glob("*.npz")}
    removed = sorted(folder.glob("*.npz"))[::2]
    for path in removed:
        path.unlink()
    (folder / "DONE").unlink()
    run_stage(compose_config(overrides))
    assert (folder / "DONE").is_file()
    for name, arrays in clean.items():
        again = load_npz(folder / name)
        for key in arrays:
            np.testing.assert_array_equal(again[key], arrays[key])


def test_resize_on_device_enters_the_key_and_keeps_the_seeds_close(tiny_all, tmp_path) -> None:
    """seeds.resize_on_device: off leaves the recorded key as before the switch existed; on re-runs
    the export (other pixels) and the seeds stay within float noise of a grey level."""
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]
    overrides += ["stage=seeds", "seeds.method=cam"]
    folder = RunDir(compose_config(overrides).run).stage_dir("seeds", "cam")
    assert "resize_on_device" not in json.loads((folder / "config.json").read_text())["seeds"]
    host = {p.name: load_npz(p) for p in sorted(folder.glob("*.npz"))}
    run_stage(compose_config([*overrides, "seeds.resize_on_device=true"]))
    assert json.loads((folder / "config.json").read_text())["seeds"]["resize_on_device"] is True
    diffs = []
    for name, arrays in host.items():
        again = load_npz(folder / name)
        np.testing.assert_array_equal(again["keys"], arrays["keys"])
        diffs.append(np.abs(again["high_res"].astype(np.float32) - arrays["high_res"].astype(np.float32)).max())
    assert 0 < max(diffs) < 0.05, max(diffs)


def test_stage_before_its_inputs_names_the_missing_stage(tmp_path) -> None:
    cfg = compose_config([f"run.root={tmp_path}", "run.name=empty", "debug=tiny", "stage=recam"])
    with pytest.raises(RecamInputError, match="stage=prepare"):
        run_stage(cfg)


def test_seeds_from_an_epoch_checkpoint_equal_the_final_weights(tiny_all, tmp_path) -> None:
    """seeds.checkpoint_epoch=<last epoch> exports the same seeds as the final model.pt."""
    cfg, _ = tiny_all
    overrides = [
        f"run.root={cfg.run.root}",
        "run.name=tiny",
        f"dataset.root={cfg.dataset.root}",
        "debug=tiny",
        f"+run.inputs.seeds={tmp_path / 'seeds'}",
        "stage=seeds",
        "seeds.method=recam",
        f"seeds.checkpoint_epoch={cfg.recam.epochs}",
    ]
    run_stage(compose_config(overrides))
    final = RunDir(cfg.run).stage_dir("seeds", "recam")
    for path in sorted((tmp_path / "seeds" / "recam").glob("*.npz"))[:3]:
        np.testing.assert_array_equal(load_npz(path)["high_res"], load_npz(final / path.name)["high_res"])


def test_changed_upstream_reruns_downstream_from_scratch(tiny_all, tmp_path) -> None:
    """A new lambda re-trains recam, then re-exports (not resumes) its seeds; CAM stages stay."""
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]
    rundir = RunDir(compose_config(overrides).run)
    cam_done = (rundir.stage_dir("seeds", "cam") / "DONE").read_text()
    files = sorted(rundir.stage_dir("seeds", "recam").glob("*.npz"))
    written = {p.name: p.stat().st_mtime_ns for p in files}
    run_stage(compose_config([*overrides, "stage=all", "recam.loss_weight=5.0"]))
    assert (rundir.stage_dir("seeds", "cam") / "DONE").read_text() == cam_done
    config = json.loads((rundir.stage_dir("seeds", "recam") / "config.json").read_text())
    assert config["seeds"]["method"] == "recam"
    for path in files:  # every file was exported again, none kept from the stale run
        assert path.stat().st_mtime_ns > written[path.name]
    # the replaced outputs are kept, untouched, until the next success
    previous = rundir.stage_dir("seeds", "recam").with_name("recam.prev")
    assert {p.name: p.stat().st_mtime_ns for p in previous.glob("*.npz")} == written


def test_a_stage_alone_equals_the_same_stage_inside_all(tiny_all, tmp_path) -> None:
    """Each stage is seeded on its own: recam re-run alone gives the weights it got in stage=all."""
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]
    run_stage(compose_config([*overrides, "stage=recam", "run.force=true"]))
    alone = load_checkpoint(tmp_path / "copy" / "recam" / "model.pt")["model"]
    inside = load_checkpoint(RunDir(cfg.run).stage_dir("recam") / "model.pt")["model"]
    for key, value in inside.items():
        torch.testing.assert_close(alone[key], value, msg=key)


def test_entry_point_exits_2_with_one_line_for_bad_input(tmp_path) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recam.train",
            "stage=recam",
            f"run.root={tmp_path}",
            "run.name=missing",
            f"hydra.run.dir={tmp_path}/hydra",
        ],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 2
    errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "stage=prepare" in errors[0]

"""The mask stages on the tiny synthetic run: ir_labels -> irn -> masks (crf, irn) -> eval_masks.

Artifact formats, worker-count invariance of the process-pool stages, resume after an
interruption, the IRN checkpoint, and the one-pass threshold sweep agreeing with the PNGs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from recam.engine.checkpoint import load_checkpoint
from recam.errors import RecamInputError
from recam.io import load_label_png, load_npz
from recam.models.irn import build_irn
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config, link_copy


def _ids(cfg, split: str) -> list[str]:
    return (RunDir(cfg.run).stage_dir("prepare") / f"{split}.txt").read_text().split()


def _keys(cfg, image_id: str) -> np.ndarray:
    return load_npz(RunDir(cfg.run).stage_dir("seeds", cfg.ir_labels.seeds) / f"{image_id}.npz")["keys"]


def _redirected(cfg, tmp_path: Path, *extra: str) -> list[str]:
    """A fresh run in tmp_path that reads prepare, cam and seeds of the tiny run."""
    rundir = RunDir(cfg.run)
    return [
        f"run.root={tmp_path}",
        "run.name=other",
        f"dataset.root={cfg.dataset.root}",
        "debug=tiny",
        f"+run.inputs.prepare={rundir.stage_dir('prepare')}",
        f"+run.inputs.seeds={rundir.stage_dir('seeds')}",
        f"+run.inputs.cam={rundir.stage_dir('cam')}",
        *extra,
    ]


def test_ir_labels_hold_background_classes_and_unsure_only(tiny_all) -> None:
    cfg, _ = tiny_all
    folder = RunDir(cfg.run).stage_dir("ir_labels")
    for image_id in _ids(cfg, cfg.ir_labels.split):
        label = load_label_png(folder / f"{image_id}.png")
        allowed = {0, 255, *(_keys(cfg, image_id) + 1).tolist()}
        assert set(np.unique(label).tolist()) <= allowed, image_id
    results = json.loads((folder / "results.json").read_text())
    assert results["images"] == len(_ids(cfg, cfg.ir_labels.split))


def test_pseudo_masks_cover_every_image_without_unsure_pixels(tiny_all) -> None:
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    for method in ("crf", "irn"):
        for image_id in _ids(cfg, cfg.masks.split):
            mask = load_label_png(rundir.stage_dir("masks", method) / f"{image_id}.png")
            seed = load_npz(rundir.stage_dir("seeds", cfg.masks.seeds) / f"{image_id}.npz")
            assert mask.shape == seed["high_res"].shape[1:]
            assert set(np.unique(mask).tolist()) <= {0, *(seed["keys"] + 1).tolist()}, (method, image_id)
            if method == "irn":
                walk = load_npz(rundir.stage_dir("masks", "irn") / f"{image_id}.npz")
                assert walk["rw"].shape == seed["cam"].shape
                np.testing.assert_array_equal(walk["keys"], seed["keys"])


def test_eval_masks_summary_and_sweep_agree_with_the_pngs(tiny_all) -> None:
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    summary = json.loads(rundir.summary_path.read_text())
    for method in ("crf", "irn"):
        entry = summary[f"eval_masks/{method}"]
        assert 0.0 <= entry["miou_fixed"] <= entry["miou"] <= 1.0
    irn = json.loads((rundir.stage_dir("eval_masks", "irn") / "results.json").read_text())
    # The sweep recomputes the walk's argmax; at the threshold the PNGs were made with it must
    # give exactly their mIoU.
    assert irn["threshold_fixed"] == cfg.masks.bg_threshold
    assert irn["sweep"][f"{cfg.masks.bg_threshold:.2f}"] == pytest.approx(irn["miou_fixed"], abs=1e-12)
    crf = json.loads((rundir.stage_dir("eval_masks", "crf") / "results.json").read_text())
    assert "sweep" not in crf and crf["miou"] == crf["miou_fixed"]
    assert "eval_masks/irn" in (rundir.root / "report.md").read_text()


def test_irn_checkpoint_loads_and_stores_the_mean_shift(tiny_all) -> None:
    cfg, _ = tiny_all
    folder = RunDir(cfg.run).stage_dir("irn")
    checkpoint = load_checkpoint(folder / "model.pt")
    model = build_irn(arch=checkpoint["arch"])
    model.load_state_dict(checkpoint["model"])
    assert torch.count_nonzero(model.mean_shift.running_mean) > 0
    last = load_checkpoint(folder / "checkpoints" / "last.pt")
    assert last["epoch"] == cfg.irn.epochs - 1
    history = json.loads((folder / "results.json").read_text())["history"]
    assert {"train_loss", "train_pos_aff_loss", "val_loss", "val_neg_aff_loss"} <= set(history[-1])
    # The backbone came from the cam stage (irn.pretrained=cam) and stayed frozen.
    cam = load_checkpoint(RunDir(cfg.run).stage_dir("cam") / "model.pt")["model"]
    torch.testing.assert_close(
        checkpoint["model"]["backbone.layer4.0.conv1.weight"], cam["backbone.layer4.0.conv1.weight"]
    )


@pytest.mark.parametrize(
    "stage,extra", [("ir_labels", ["ir_labels.num_workers=2"]), ("masks", ["masks.method=crf", "masks.num_workers=2"])]
)
def test_process_pool_output_does_not_depend_on_worker_count(tiny_all, tmp_path, stage, extra) -> None:
    cfg, _ = tiny_all
    overrides = _redirected(cfg, tmp_path, f"stage={stage}", *extra)
    if stage == "masks":
        overrides.append(f"+run.inputs.ir_labels={RunDir(cfg.run).stage_dir('ir_labels')}")
    run_stage(compose_config(overrides))
    method = "crf" if stage == "masks" else None
    one = RunDir(cfg.run).stage_dir(stage, method)
    two = tmp_path / "other" / stage / (method or "")
    names = sorted(p.name for p in one.glob("*.png"))
    assert names and names == sorted(p.name for p in two.glob("*.png"))
    for name in names:
        assert (one / name).read_bytes() == (two / name).read_bytes(), name
    # Same key: the worker count is not part of the config, so the tiny run's DONE is reused.
    assert json.loads((one / "DONE").read_text())["key"] == json.loads((two / "DONE").read_text())["key"]


def test_interrupted_ir_labels_resume_and_keep_finished_files(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    overrides = [
        f"run.root={tmp_path}",
        "run.name=copy",
        f"dataset.root={cfg.dataset.root}",
        "debug=tiny",
        "stage=ir_labels",
    ]
    folder = tmp_path / "copy" / "ir_labels"
    clean = {p.name: p.read_bytes() for p in folder.glob("*.png")}
    removed = sorted(folder.glob("*.png"))[::3]
    for path in removed:  # deleted after the stage finished: its manifest no longer matches
        path.unlink()
    kept = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    results = run_stage(compose_config(overrides))
    assert results["labelled_now"] == len(removed) and (folder / "DONE").is_file()
    for name, data in clean.items():
        assert (folder / name).read_bytes() == data
    for name, mtime in kept.items():
        assert (folder / name).stat().st_mtime_ns == mtime, f"{name} was redone"


def test_masks_irn_before_irn_names_the_missing_stage(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    with pytest.raises(RecamInputError, match="stage=irn"):
        run_stage(compose_config(_redirected(cfg, tmp_path, "stage=masks", "masks.method=irn")))

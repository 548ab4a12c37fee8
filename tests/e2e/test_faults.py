"""Bad input and faults: one clear line (RecamInputError) and nothing lost, one test per case.

Covered elsewhere as well: a stage run before its inputs (test_tiny_pipeline), NaN loss
(unit/test_training), interrupted mid-stage and resumed to the same outputs (seeds in
test_tiny_pipeline, ir_labels in test_mask_stages, here a training process killed by SIGKILL),
corrupt .npz / label PNG readers (unit).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from recam.engine.checkpoint import load_checkpoint, save_checkpoint
from recam.errors import RecamInputError
from recam.io import _HOST, load_label_png, remove_stale_temporaries, save_label_png, write_json
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config, link_copy


def _copy(cfg, tmp_path: Path, *extra: str) -> list[str]:
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    return [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny", *extra]


def test_missing_dataset_root_names_it(tmp_path) -> None:
    cfg = compose_config(
        [f"run.root={tmp_path}", "debug=tiny", "dataset=voc12", f"dataset.root={tmp_path}/nope", "stage=prepare"]
    )
    with pytest.raises(RecamInputError, match=f"{tmp_path}/nope"):
        run_stage(cfg)


@pytest.fixture
def corrupt_dataset(tiny_all, tmp_path) -> tuple[list[str], str]:
    """A copy of the tiny dataset with one train image truncated to half its bytes."""
    cfg, _ = tiny_all
    root = tmp_path / "VOC2012"
    shutil.copytree(cfg.dataset.root, root)
    victim = (RunDir(cfg.run).stage_dir("prepare") / "train.txt").read_text().split()[3]
    path = root / "JPEGImages" / f"{victim}.jpg"
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    # dataset=voc12: the generator would otherwise notice and rewrite the synthetic set.
    return [
        f"run.root={tmp_path}",
        "run.name=bad",
        "debug=tiny",
        "dataset=voc12",
        f"dataset.root={root}",
        "stage=prepare",
    ], victim


def test_corrupt_image_fails_naming_the_file(corrupt_dataset) -> None:
    overrides, victim = corrupt_dataset
    with pytest.raises(RecamInputError, match=rf"{victim}\.jpg.*dataset\.bad_images=skip"):
        run_stage(compose_config(overrides))


def test_corrupt_image_is_skipped_and_reported(corrupt_dataset, tmp_path) -> None:
    overrides, victim = corrupt_dataset
    results = run_stage(compose_config([*overrides, "dataset.bad_images=skip"]))
    assert list(results["bad_images"]) == [victim]
    prepared = tmp_path / "bad" / "prepare"
    for split in ("train", "train_aug"):
        ids = (prepared / f"{split}.txt").read_text().split()
        assert ids and victim not in ids


def test_mask_with_a_class_the_dataset_lacks(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    overrides = _copy(cfg, tmp_path)
    root = tmp_path / "VOC2012"
    shutil.copytree(cfg.dataset.root, root)
    image_id = (tmp_path / "copy" / "prepare" / "train.txt").read_text().split()[0]
    mask = load_label_png(root / "SegmentationClass" / f"{image_id}.png")
    mask[:2, :2] = 42
    save_label_png(root / "SegmentationClass" / f"{image_id}.png", mask)
    cfg2 = compose_config(
        [*overrides, f"dataset.root={root}", "stage=eval_seeds", "eval_seeds.method=cam", "run.force=true"]
    )
    with pytest.raises(RecamInputError, match=rf"{image_id}.png has class ids \[42\] - the dataset has 8 classes"):
        run_stage(cfg2)


def test_checkpoint_of_another_architecture(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    overrides = _copy(cfg, tmp_path, "stage=seeds", "seeds.method=cam", "model.arch=resnet34")
    with pytest.raises(RecamInputError, match="does not match the model"):
        run_stage(compose_config(overrides))


def test_checkpoint_of_other_classes(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    overrides = _copy(cfg, tmp_path, "stage=seeds", "seeds.method=cam", "run.force=true")
    path = tmp_path / "copy" / "cam" / "model.pt"
    checkpoint = load_checkpoint(path)
    checkpoint["class_names"] = list(reversed(checkpoint["class_names"]))
    save_checkpoint(path, checkpoint)
    with pytest.raises(RecamInputError, match="was trained on classes"):
        run_stage(compose_config(overrides))


def test_full_disk_keeps_the_old_file_and_leaves_no_partial_one(tmp_path, monkeypatch) -> None:
    target = tmp_path / "results.json"
    write_json(target, {"old": 1})
    real_open = open

    class FullDisk:
        def __init__(self, *args, **kwargs):
            self.file = real_open(*args, **kwargs)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.file.close()

        def write(self, data):
            self.file.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("builtins.open", FullDisk)
    with pytest.raises(RecamInputError, match=r"cannot write .*results\.json \(No space left on device\)"):
        write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_nan_loss_in_a_stage_stops_naming_step_and_images(tiny_all, tmp_path) -> None:
    """A stage whose loss turns NaN stops with the step and the batch's ids; last.pt stays valid."""
    cfg, _ = tiny_all
    overrides = _copy(cfg, tmp_path, "stage=cam", "cam.lr=1e30", "cam.momentum=0.9", "cam.max_steps=3", "cam.epochs=3")
    finished = {p.name: p.read_bytes() for p in (tmp_path / "copy" / "cam").glob("*") if p.is_file()}
    with pytest.raises(RecamInputError, match=r"cam loss is (nan|inf) at epoch \d+ step \d+ .*images \["):
        run_stage(compose_config(overrides))
    last = tmp_path / "copy" / "cam.next" / "checkpoints" / "last.pt"
    if last.is_file():
        state = load_checkpoint(last)
        assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert not (tmp_path / "copy" / "cam.next" / "DONE").is_file()
    # the changed config wrote into cam.next/: the finished classifier is byte for byte as it was
    assert {p.name: p.read_bytes() for p in (tmp_path / "copy" / "cam").glob("*") if p.is_file()} == finished


def test_killed_training_resumes_to_the_uninterrupted_weights(tiny_all, tmp_path) -> None:
    """SIGKILL a `cam` run after its first epoch checkpoint, leave a half-written temporary file
    behind as a kill mid-write would, re-run: it resumes from last.pt, removes the partial file and
    ends with the weights of a run that was never interrupted."""
    cfg, _ = tiny_all
    common = [
        "debug=tiny",
        f"run.root={tmp_path}",
        f"dataset.root={cfg.dataset.root}",
        "stage=cam",
        f"+run.inputs.prepare={RunDir(cfg.run).stage_dir('prepare')}",
        "cam.epochs=8",
        "cam.max_steps=2",
    ]
    folder = tmp_path / "killed" / "cam"
    staged = folder.with_name("cam.next")  # a first run writes there and is swapped in when it finishes
    process = subprocess.Popen(
        [sys.executable, "-m", "recam.train", *common, "run.name=killed", f"hydra.run.dir={tmp_path}/hydra"],
        cwd=Path(__file__).resolve().parents[2],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (staged / "checkpoints" / "last.pt").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (folder / "DONE").is_file(), "the run finished before it could be killed"
    epochs_done = load_checkpoint(staged / "checkpoints" / "last.pt")["epoch"] + 1
    assert epochs_done < 8
    partial = staged / "checkpoints" / f"last.pt.{_HOST}.{process.pid}.tmp"  # the dead writer's leftover
    partial.write_bytes(b"half a checkpoint")

    resumed = run_stage(compose_config([*common, "run.name=killed"]))
    clean = run_stage(compose_config([*common, "run.name=clean"]))
    assert not partial.exists() and not list(folder.rglob("*.tmp"))
    assert [h["epoch"] for h in resumed["history"]] == list(range(1, 9))
    weights = load_checkpoint(folder / "model.pt")["model"]
    for key, value in load_checkpoint(tmp_path / "clean" / "cam" / "model.pt")["model"].items():
        torch.testing.assert_close(weights[key], value, msg=key)
    assert resumed["val_map"] == clean["val_map"]


def test_stale_temporaries_of_live_writers_are_kept(tmp_path) -> None:
    live = tmp_path / f"a.npz.{_HOST}.{os.getpid()}.tmp"
    other_host = tmp_path / "sub" / f"b.npz.node-7.{os.getpid()}.tmp"
    other_host.parent.mkdir()
    for path in (live, other_host):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == 0  # a live local writer, a fresh remote one
    old = time.time() - 7200
    os.utime(other_host, (old, old))
    assert remove_stale_temporaries(tmp_path) == 1 and live.exists() and not other_host.exists()

"""Issue 16: never lose work, never a traceback.

Each case runs on a copy of the session's finished tiny experiment: the bad input, the one line,
and every earlier artifact byte-identical afterwards.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from recam.data.datasets import image_size, size_buckets
from recam.errors import RecamInputError
from recam.io import load_label_png, save_label_png
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config, link_copy

REPO = Path(__file__).resolve().parents[2]


def _copy(cfg, tmp_path: Path) -> list[str]:
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    return [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """(inode, size, mtime) of every file under `folder` but the logs: any rewrite shows (the
    pipeline's writes replace the inode; an in-place write changes the mtime)."""
    return {
        p.relative_to(folder).as_posix(): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and "logs" not in p.relative_to(folder).parts
    }


# A finished stage re-run with an invalid override: one line naming the key, nothing touched.
BAD_OVERRIDES = [
    (["stage=cam", "cam.batch_size=0"], "cam.batch_size=0"),
    (["stage=cam", "cam.batch_size=-4"], "cam.batch_size=-4"),
    (["stage=cam", "cam.lr=-0.1"], "cam.lr=-0.1"),
    (["stage=cam", "cam.epochs=0"], "cam.epochs=0"),
    (["stage=seg", "seg.checkpoint_every=0"], "seg.checkpoint_every=0"),
    (["stage=cam", "model.arch=resnet5"], "model.arch='resnet5'"),
    (["stage=cam", "model.pretrained=/no/such/weights.pth"], "model.pretrained='/no/such/weights.pth'"),
    (["stage=seeds", "seeds.method=cam", "seeds.scales=[]"], "seeds.scales=[]"),
    (["stage=eval_seeds", "eval_seeds.method=cam", "eval_seeds.sweep=[0.1,0.5,0]"], "eval_seeds.sweep="),
    (["stage=eval_seeds", "eval_seeds.method=cam", "eval_seeds.threshold=1.5"], "eval_seeds.threshold=1.5"),
    (["stage=masks", "masks.bg_threshold=-0.2"], "masks.bg_threshold=-0.2"),
    (["stage=recam", "recam.loss_weight=-1"], "recam.loss_weight=-1"),
    (["stage=ir_labels", "ir_labels.fg_threshold=0.05"], "ir_labels.bg_threshold"),
    (["stage=cam", "runtime.device=gpu"], "runtime.device='gpu'"),
    (["stage=irn", "irn.crop_size=50"], "irn.crop_size=50"),
    (["stage=seg", "seg.arch=deeplabv9"], "seg.arch='deeplabv9'"),
    (["stage=all", "stage.steps=[recam,seeds/recm]"], "seeds/recm"),
    (["stage=visualize", "visualize.methods=[cam,cam]"], "visualize.methods"),
    (["stage=visualize", "visualize.font_size=4"], "visualize.font_size=4"),
]


@pytest.mark.parametrize("overrides, named", BAD_OVERRIDES, ids=[o[1] for o in BAD_OVERRIDES])
def test_an_invalid_override_is_one_line_and_touches_nothing(tiny_all, tmp_path, overrides, named) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    before = _snapshot(tmp_path / "copy")
    with pytest.raises(RecamInputError) as err:
        run_stage(compose_config([*common, *overrides]))
    message = str(err.value)
    assert "\n" not in message and message.startswith("recam: ") and named in message
    assert _snapshot(tmp_path / "copy") == before
    assert not list((tmp_path / "copy").rglob("*.next")) and not list((tmp_path / "copy").rglob("*.lock"))


def _entry(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "recam.train", *args, f"hydra.run.dir={tmp_path}/hydra"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=300,
    )


def test_entry_point_bad_value_and_hydra_errors_exit_2_with_our_line(tmp_path) -> None:
    bad = _entry(tmp_path, "stage=cam", f"run.root={tmp_path}", "cam.batch_size=0")
    assert bad.returncode == 2
    assert [line for line in bad.stderr.splitlines() + bad.stdout.splitlines() if "ERROR" in line][0].endswith(
        "recam: cam.batch_size=0 is not allowed - use an integer >= 1"
    )
    for override in ("cam.no_such_key=1", "cam.lr=fast", "dataset=nope"):
        done = _entry(tmp_path, "stage=cam", f"run.root={tmp_path}", override)
        assert done.returncode == 2, (override, done.stderr[-500:])
        lines = done.stderr.strip().splitlines()
        assert lines[-1].startswith("recam: Hydra stopped before the run started"), lines[-3:]
        assert len(lines) > 1  # Hydra's own message is kept above ours
    assert not (tmp_path / "synthetic_resnet50" / "cam").exists()


def test_a_crash_after_begin_keeps_the_finished_outputs_and_resumes_its_staging(tiny_all, tmp_path) -> None:
    """seeds with another scale list, crashing midway (a missing image): seeds/cam stays as it was;
    the files exported before the crash are in seeds/cam.next and are kept by the re-run."""
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    folder = tmp_path / "copy" / "seeds" / "cam"
    before = _snapshot(folder)
    ids = (tmp_path / "copy" / "prepare" / "train_aug.txt").read_text().split()
    order = [i for bucket in size_buckets([image_size(cfg.dataset.root, i) for i in ids], 1) for i in bucket]
    image = Path(cfg.dataset.root) / "JPEGImages" / f"{ids[order[-1]]}.jpg"  # the last one exported
    hidden = tmp_path / "hidden.jpg"
    shutil.copy(image, hidden)
    overrides = [*common, "stage=seeds", "seeds.method=cam", "seeds.scales=[1.0]", "seeds.bucket_size=1"]
    try:
        image.write_bytes(hidden.read_bytes()[: len(hidden.read_bytes()) // 2])  # the header reads, the pixels do not
        with pytest.raises(RecamInputError, match="unreadable or corrupt"):
            run_stage(compose_config(overrides))
    finally:
        shutil.copy(hidden, image)
    assert _snapshot(folder) == before
    staged = folder.with_name("cam.next")
    written = {p.name: p.stat().st_mtime_ns for p in staged.glob("*.npz")}
    assert written and not (staged / "DONE").exists()
    run_stage(compose_config(overrides))
    assert not staged.exists() and (folder / "DONE").is_file()
    assert _snapshot(folder.with_name("cam.prev")) == before
    for name, mtime in written.items():  # resumed: what was exported before the crash is kept
        assert (folder / name).stat().st_mtime_ns == mtime


def test_keep_previous_false_drops_the_replaced_outputs(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    run_stage(
        compose_config(
            [
                *common,
                "stage=eval_seeds",
                "eval_seeds.method=cam",
                "eval_seeds.threshold=0.3",
                "run.keep_previous=false",
            ]
        )
    )
    folder = tmp_path / "copy" / "eval_seeds" / "cam"
    assert json.loads((folder / "results.json").read_text())["threshold_fixed"] == 0.3
    assert not folder.with_name("cam.prev").exists()


def test_a_damaged_seed_file_is_found_and_only_it_is_redone(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    folder = tmp_path / "copy" / "seeds" / "cam"
    files = sorted(folder.glob("*.npz"))
    original = files[0].read_bytes()
    files[0].unlink()  # (a hard-linked copy: never write a shared inode)
    files[0].write_bytes(original[: len(original) // 2])  # a crash or a disk left it half
    files[1].unlink()  # a user deleted it as advised
    others = {p.name: p.stat().st_mtime_ns for p in files[2:]}
    with pytest.raises(RecamInputError, match=r"seeds/cam changed after it finished \(2 files"):
        run_stage(compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam", "run.force=true"]))
    run_stage(compose_config([*common, "stage=seeds", "seeds.method=cam"]))
    assert files[0].read_bytes() == original and files[1].is_file()
    assert {p.name: p.stat().st_mtime_ns for p in files[2:]} == others
    assert RunDir.is_done(folder)


def test_a_damaged_done_file_counts_as_unfinished(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    folder = tmp_path / "copy" / "eval_seeds" / "cam"
    (folder / "DONE").unlink()
    (folder / "DONE").write_bytes(b"\x00\xff\x89binary")
    with pytest.raises(RecamInputError, match="damaged DONE"):
        RunDir(compose_config(common).run).require("eval_seeds", "cam")
    run_stage(compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam"]))
    assert json.loads((folder / "DONE").read_text())["key"]


def test_summary_json_is_rebuilt_when_missing_or_damaged(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    summary = tmp_path / "copy" / "summary.json"
    expected = json.loads(summary.read_text())
    for damage in (b"{not json", None):
        summary.unlink()
        if damage is not None:
            summary.write_bytes(damage)
        run_stage(compose_config([*common, "stage=report"]))
        assert json.loads(summary.read_text()) == expected


def test_gt_mask_with_an_unknown_class_id_or_another_size_is_named(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    data = tmp_path / "data"
    shutil.copytree(Path(cfg.dataset.root), data)
    common = [*common[:2], f"dataset.root={data}", *common[3:]]
    ids = (tmp_path / "copy" / "prepare" / "train.txt").read_text().split()
    mask_file = data / "SegmentationClass" / f"{ids[0]}.png"
    mask = load_label_png(mask_file)
    bad = mask.copy()
    bad[0, 0] = 42
    save_label_png(mask_file, bad)
    with pytest.raises(RecamInputError, match=rf"{ids[0]}.png has class ids \[42\]"):
        run_stage(compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam", "run.force=true"]))
    val = (tmp_path / "copy" / "prepare" / "val.txt").read_text().split()
    val_file = data / "SegmentationClass" / f"{val[0]}.png"
    val_mask = load_label_png(val_file)
    val_bad = val_mask.copy()
    val_bad[-1, -1] = 42
    save_label_png(val_file, val_bad)
    with pytest.raises(RecamInputError, match=rf"{val[0]}.png has class ids \[42\]"):  # IRN validation
        run_stage(compose_config([*common, "stage=irn", "run.force=true"]))
    save_label_png(val_file, val_mask)
    save_label_png(mask_file, np.pad(mask, ((0, 3), (0, 0))))
    with pytest.raises(RecamInputError, match=r"but its image is"):
        run_stage(compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam", "run.force=true"]))


def test_two_processes_on_one_stage_folder(tiny_all, tmp_path) -> None:
    """A live writer of another config blocks with one line; of the same config it cooperates;
    once it is gone (killed), its lock is stale and removed."""
    cfg, _ = tiny_all
    common = _copy(cfg, tmp_path)
    run = compose_config(common).run
    final = RunDir(run).stage_dir("eval_seeds", "cam")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time\n"
                "from recam.config import RunConfig\n"
                "from recam.rundir import RunDir\n"
                f"RunDir(RunConfig(name='copy', root={str(tmp_path)!r})).begin(__import__('pathlib').Path({str(final)!r}),"
                " {'other': 1}, force=True)\n"
                "print('held', flush=True)\n"
                "time.sleep(120)\n"
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(
            RecamInputError, match=rf"being written by another run with another config .*pid {holder.pid}"
        ):
            run_stage(
                compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam", "eval_seeds.threshold=0.4"])
            )
        same = RunDir(run)
        folder, done = same.begin(final, {"other": 1})  # the same config: a cooperating shard
        assert done is None and folder == final.with_name("cam.next")
        same.close()
    finally:
        holder.kill()
        holder.wait()
    run_stage(compose_config([*common, "stage=eval_seeds", "eval_seeds.method=cam", "eval_seeds.threshold=0.4"]))
    assert json.loads((final / "results.json").read_text())["threshold_fixed"] == 0.4
    assert not final.with_name("cam.lock").exists()

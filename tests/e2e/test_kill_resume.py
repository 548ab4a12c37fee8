"""kill -9 at any point of any stage that resumes, twice in a row: the re-run ends with the files of
an uninterrupted run (the session's tiny experiment), byte for byte or array for array."""

from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recam.engine.checkpoint import load_checkpoint
from recam.io import load_label_png, load_npz
from recam.pipeline import run_stage
from tests.conftest import compose_config, link_copy

REPO = Path(__file__).resolve().parents[2]

# (plan step, its overrides, folder, what marks progress inside the folder being written)
CASES = [
    ("cam", [], "cam", "checkpoints/last.pt"),
    ("seeds", ["seeds.method=cam"], "seeds/cam", "*.npz"),
    ("recam", [], "recam", "checkpoints/*.pt"),
    ("ir_labels", [], "ir_labels", "*.png"),
    ("irn", [], "irn", "checkpoints/last.pt"),
    ("masks", ["masks.method=crf"], "masks/crf", "*.png"),
    ("masks", ["masks.method=irn"], "masks/irn", "*.npz"),
    ("seg", ["seg.labels=pseudo"], "seg/pseudo", "checkpoints/last.pt"),
    ("eval_seg", ["eval_seg.labels=pseudo"], "eval_seg/pseudo", "pred/*.png"),
]
# In `make test` (the others, slower, run with -m slow; `cam` is also killed in test_faults).
FAST = {"seeds/cam", "ir_labels", "seg/pseudo"}


def _progress(folder: Path, pattern: str) -> tuple[int, int]:
    files = list(folder.glob(pattern)) if folder.is_dir() else []
    newest = max((p.stat().st_mtime_ns for p in files), default=0)
    return len(files), newest


def _kill_when_it_moves(command: list[str], staged: Path, pattern: str, timeout: float = 240) -> bool:
    """Start `command`, SIGKILL it as soon as it writes something new matching `pattern` under
    `staged`; True when it was killed before it finished."""
    before = _progress(staged, pattern)
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while process.poll() is None and time.time() < deadline and _progress(staged, pattern) == before:
        time.sleep(0.002)
    killed = process.poll() is None and staged.is_dir()  # gone = already swapped in: it finished
    process.send_signal(signal.SIGKILL)
    process.wait()
    return killed


def _same_files(got: Path, want: Path) -> None:
    names = sorted(
        p.relative_to(want).as_posix()
        for p in want.rglob("*")
        if p.is_file() and p.suffix in (".npz", ".png", ".pt") and "tb" not in p.parts and "checkpoints" not in p.parts
    )
    assert names
    for name in names:
        a, b = got / name, want / name
        if a.suffix == ".npz":
            x, y = load_npz(a), load_npz(b)
            assert x.keys() == y.keys(), name
            for key in x:
                np.testing.assert_array_equal(x[key], y[key], err_msg=f"{name}:{key}")
        elif a.suffix == ".png":
            np.testing.assert_array_equal(load_label_png(a), load_label_png(b), err_msg=name)
        else:
            x, y = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
            assert x.keys() == y.keys(), name
            for key in x:
                torch.testing.assert_close(x[key], y[key], rtol=0, atol=0, msg=f"{name}:{key}")


@pytest.mark.parametrize(
    "step, overrides, folder, pattern",
    [pytest.param(*case, marks=() if case[2] in FAST else pytest.mark.slow, id=case[2]) for case in CASES],
)
def test_killed_twice_resumes_to_the_uninterrupted_outputs(
    tiny_all, tmp_path, step, overrides, folder, pattern
) -> None:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    final = tmp_path / "copy" / folder
    shutil.rmtree(final)  # its inputs stay finished: the stage runs again from nothing
    common = [
        f"run.root={tmp_path}",
        "run.name=copy",
        f"dataset.root={cfg.dataset.root}",
        "debug=tiny",
        f"stage={step}",
        *overrides,
    ]
    command = [sys.executable, "-m", "recam.train", *common, f"hydra.run.dir={tmp_path}/hydra"]
    staged = final.with_name(final.name + ".next")
    kills = [_kill_when_it_moves(command, staged, pattern) for _ in range(2)]
    assert kills[0], "the first run finished before it could be killed"
    if all(kills):
        assert not final.exists()  # nothing is swapped in by a killed run
    run_stage(compose_config(common))
    assert not staged.exists() and (final / "DONE").is_file() and not list(final.rglob("*.tmp"))
    _same_files(final, Path(cfg.run.root) / "tiny" / folder)

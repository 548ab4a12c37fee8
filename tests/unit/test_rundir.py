"""The run-directory contract (recam/rundir.py) on small folders, and the house rules of issue 16."""

from __future__ import annotations

import ast
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from recam.config import RunConfig
from recam.engine.progress import progress
from recam.errors import RecamInputError
from recam.io import readable, save_label_png, save_npz, write_json
from recam.masks.irn_losses import irn_losses
from recam.masks.path_index import build_path_index
from recam.rundir import RunDir, build_manifest, finished_folders

REPO = Path(__file__).resolve().parents[2]


def _stage(tmp_path: Path, slice_: dict, files: dict[str, bytes], *, keep_previous: bool = True) -> Path:
    rundir = RunDir(RunConfig(name="exp", root=str(tmp_path), keep_previous=keep_previous))
    final = rundir.stage_dir("toy")
    out, done = rundir.begin(final, slice_)
    if done is None:
        for name, data in files.items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(data)
        rundir.finish(out, slice_, {"n": len(files)})
    rundir.close()
    return final


def test_first_run_writes_into_next_then_swaps_in(tmp_path) -> None:
    final = _stage(tmp_path, {"a": 1}, {"x.bin": b"1", "sub/y.bin": b"22"})
    assert sorted(p.name for p in final.parent.iterdir()) == ["toy"]
    done = json.loads((final / "DONE").read_text())
    assert done["manifest"] == {
        "config.json": (final / "config.json").stat().st_size,
        "inputs.json": 3,
        "results.json": (final / "results.json").stat().st_size,
        "sub/y.bin": 2,
        "x.bin": 1,
    }
    assert not (final / "started.json").exists()
    # What produced the files, for comparisons across machines; not part of the key.
    assert done["environment"]["torch"] == torch.__version__ and done["environment"]["cpu"]
    assert done["environment"]["torch_threads"] == torch.get_num_threads()


def test_a_changed_config_replaces_and_keeps_the_previous_outputs(tmp_path) -> None:
    _stage(tmp_path, {"a": 1}, {"x.bin": b"old"})
    final = _stage(tmp_path, {"a": 2}, {"x.bin": b"new"})
    assert (final / "x.bin").read_bytes() == b"new"
    assert (final.with_name("toy.prev") / "x.bin").read_bytes() == b"old"
    _stage(tmp_path, {"a": 3}, {"x.bin": b"newest"}, keep_previous=False)
    assert not final.with_name("toy.prev").exists()


def test_up_to_date_is_skipped_unless_a_manifest_file_changed(tmp_path) -> None:
    final = _stage(tmp_path, {"a": 1}, {"x.bin": b"111", "y.bin": b"2"})
    rundir = RunDir(RunConfig(name="exp", root=str(tmp_path)))
    folder, done = rundir.begin(final, {"a": 1})
    assert folder == final and done == {"n": 2}
    rundir.close()
    (final / "x.bin").write_bytes(b"1")  # changed size
    folder, done = rundir.begin(final, {"a": 1})
    assert folder == final and done is None  # resumed in place: only what is missing is redone
    assert not (final / "DONE").exists() and (final / "y.bin").read_bytes() == b"2"
    rundir.close()


def test_an_interrupted_swap_is_completed_by_the_next_run(tmp_path) -> None:
    final = _stage(tmp_path, {"a": 1}, {"x.bin": b"old"})
    staged = final.with_name("toy.next")
    staged.mkdir()
    (staged / "x.bin").write_bytes(b"new")
    write_json(staged / "DONE", {"key": "k", "manifest": build_manifest(staged)})  # killed between the renames
    rundir = RunDir(RunConfig(name="exp", root=str(tmp_path)))
    rundir.begin(final, {"a": 1})
    assert (final / "x.bin").read_bytes() == b"new" and not (staged / "x.bin").exists()
    rundir.close()


def test_finished_folders_skip_side_folders(tmp_path) -> None:
    _stage(tmp_path, {"a": 1}, {})
    _stage(tmp_path, {"a": 2}, {})
    (tmp_path / "exp" / "toy.next").mkdir()
    assert [p.name for p in finished_folders(tmp_path / "exp")] == ["toy"]


def test_readable_finds_damaged_files(tmp_path) -> None:
    save_npz(tmp_path / "a.npz", x=np.arange(1000))
    save_label_png(tmp_path / "b.png", np.zeros((8, 8), np.uint8))
    assert readable(tmp_path / "a.npz") and readable(tmp_path / "b.png")
    for name in ("a.npz", "b.png"):
        data = (tmp_path / name).read_bytes()
        (tmp_path / name).write_bytes(data[: len(data) - 20])
        assert not readable(tmp_path / name)
    assert not readable(tmp_path / "missing.npz")


def test_progress_is_line_based_when_not_a_terminal() -> None:
    stream = io.StringIO()
    for _ in progress(range(3), desc="toy", file=stream, mininterval=0):
        pass
    text = stream.getvalue()
    assert "\r" not in text and text.count("\n") == len(text.strip().splitlines()) >= 2
    assert text.strip().splitlines()[-1].startswith("toy: 100%")


def test_the_import_graph_points_down_and_has_no_circle() -> None:
    """recam.* module imports (top-level and inside functions): no cycle, and no stage imports the
    pipeline (the table that imports the stages)."""
    graph: dict[str, set[str]] = {}
    for path in (REPO / "recam").rglob("*.py"):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("recam"):
                imported.add(node.module)
                imported |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names if a.name.startswith("recam")}
        graph[module] = imported
    graph = {m: {i for i in deps if i in graph and i != m} for m, deps in graph.items()}
    for module in graph:
        if module.startswith("recam.stages."):
            assert "recam.pipeline" not in graph[module], module
    state: dict[str, int] = {}

    def visit(module: str, trail: list[str]) -> None:
        state[module] = 1
        for dep in graph[module]:
            assert state.get(dep) != 1, f"import circle: {' -> '.join([*trail, module, dep])}"
            if dep not in state:
                visit(dep, [*trail, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


def test_irn_losses_with_the_mean_count_over_ranks_average_to_the_whole_batch() -> None:
    """Two 'ranks' with different pair counts: the mean over ranks of the losses normalised by the
    mean count equals the loss of the whole batch (what DDP's gradient average then gives)."""
    torch.manual_seed(0)
    index = build_path_index(2, (6, 6))
    n_dirs, n_src = len(index.search_dst), index.src_indices.size
    edge, dp = torch.randn(4, 1, 6, 6), torch.randn(4, 2, 6, 6)
    labels = {
        k: (torch.rand(4, n_dirs, n_src) < p).float() for k, p in (("bg_pos", 0.5), ("fg_pos", 0.1), ("neg", 0.3))
    }
    labels["fg_pos"][2:] = 0  # the second rank has no foreground pairs at all
    whole = irn_losses(edge, dp, labels["bg_pos"], labels["fg_pos"], labels["neg"], index)
    halves = [slice(0, 2), slice(2, 4)]
    counts = {k: torch.stack([v[h].sum() for h in halves]).mean() for k, v in labels.items()}
    parts = [
        irn_losses(edge[h], dp[h], labels["bg_pos"][h], labels["fg_pos"][h], labels["neg"][h], index, counts=counts)
        for h in halves
    ]
    for key in ("pos_aff_loss", "neg_aff_loss", "dp_fg_loss", "dp_bg_loss", "total"):
        torch.testing.assert_close((parts[0][key] + parts[1][key]) / 2, whole[key], rtol=1e-5, atol=1e-6)
    per_rank = [
        irn_losses(edge[h], dp[h], labels["bg_pos"][h], labels["fg_pos"][h], labels["neg"][h], index) for h in halves
    ]
    assert not torch.isclose((per_rank[0]["dp_fg_loss"] + per_rank[1]["dp_fg_loss"]) / 2, whole["dp_fg_loss"])


def test_pool_workers_die_with_their_parent(tmp_path) -> None:
    """SIGKILL the parent of a CRF-style pool: its workers stop too (no PNG written afterwards)."""
    script = (
        "import os, sys, time\n"
        "from recam.engine.pool import map_jobs\n"
        "from tests.unit.test_rundir import slow_job\n"
        f"map_jobs(slow_job, [{str(tmp_path)!r}] * 8, num_workers=2, chunksize=1)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while not list(tmp_path.glob("*.pid")) and time.time() < deadline:
        time.sleep(0.1)
    workers = [int(p.stem) for p in tmp_path.glob("*.pid")]
    assert workers
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(_alive(pid) for pid in workers):
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in workers)
    assert not list(tmp_path.glob("*.done"))


def slow_job(folder: str) -> None:
    (Path(folder) / f"{os.getpid()}.pid").touch()
    time.sleep(30)
    (Path(folder) / f"{os.getpid()}.done").touch()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_config_validation_of_every_experiment_passes() -> None:
    from recam.validate import validate
    from tests.conftest import compose_config

    for experiment in sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")):
        validate(compose_config([f"experiment={experiment}", "stage=all"]), paths=False)


def test_lock_of_a_dead_process_is_stale(tmp_path) -> None:
    run = RunConfig(name="exp", root=str(tmp_path))
    final = RunDir(run).stage_dir("toy")
    lock = final.with_name("toy.lock")
    lock.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    from recam.rundir import _HOST

    write_json(
        lock / f"{_HOST}.{dead.stdout.strip()}.json",
        {"key": "other", "host": _HOST, "pid": int(dead.stdout), "since": "then"},
    )
    rundir = RunDir(run)
    folder, done = rundir.begin(final, {"a": 1})
    assert done is None and folder == final.with_name("toy.next")
    rundir.close()
    with pytest.raises(RecamInputError):  # and a live one of another config is not
        write_json(lock / f"{_HOST}.1.json", {"key": "other", "host": _HOST, "pid": 1, "since": "boot"})
        RunDir(run).begin(final, {"a": 2})

"""Hydra multirun sweeps over the tiny run, `stage.steps`, and the `summary` stage."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import pytest

from recam.errors import RecamInputError
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config

REPO = Path(__file__).resolve().parents[2]


def test_threshold_multirun_and_summary(tiny_all, tmp_path) -> None:
    cfg, _ = tiny_all
    rundir = RunDir(cfg.run)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "recam.train",
            "debug=tiny",
            f"run.root={tmp_path}",
            f"dataset.root={cfg.dataset.root}",
            "sweep=seed_threshold",
            "stage.steps=[eval_seeds/cam]",
            "eval_seeds.threshold=0.15,0.3",
            f"+run.inputs.prepare={rundir.stage_dir('prepare')}",
            f"+run.inputs.seeds={rundir.stage_dir('seeds')}",
            f"hydra.sweep.dir={tmp_path}/hydra",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    sweep = tmp_path / "sweep_seed_threshold"
    assert sorted(p.name for p in sweep.iterdir()) == ["threshold=0.15", "threshold=0.3"]
    # Each job ran only the selected step and read the shared seeds.
    assert not (sweep / "threshold=0.15" / "seeds").exists()
    run_stage(compose_config([f"run.root={tmp_path}", "debug=tiny", "stage=summary", f"summary.runs={sweep}"]))
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [float(r["eval_seeds.threshold"]) for r in sorted(rows, key=lambda r: r["run"])] == [0.15, 0.3]
    fixed = {float(r["eval_seeds.threshold"]): float(r["eval_seeds/cam (fixed t)"]) for r in rows}
    tiny = (rundir.stage_dir("eval_seeds", "cam") / "results.json").read_text()
    assert fixed[0.3] == pytest.approx(json.loads(tiny)["sweep"]["0.30"], abs=1e-12)
    assert (sweep / "summary.png").stat().st_size > 1000
    assert "swept: eval_seeds.threshold" in (sweep / "summary.md").read_text()


def test_unknown_step_fails_before_anything_runs(tmp_path) -> None:
    cfg = compose_config([f"run.root={tmp_path}", "debug=tiny", "stage=all", "stage.steps=[recam,seeds/gradcam++]"])
    with pytest.raises(RecamInputError, match="seeds/gradcam"):
        run_stage(cfg)
    assert not (tmp_path / cfg.run.name).exists()


def test_summary_without_runs_names_the_folder(tmp_path) -> None:
    with pytest.raises(RecamInputError, match="no run with a summary.json"):
        run_stage(compose_config([f"run.root={tmp_path}", "debug=tiny", "stage=summary", f"summary.runs={tmp_path}"]))

"""Shared fixtures: the golden-vector folder and loader."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DEFAULT_GOLDEN = REPO.parent / "shared" / "reference" / "golden"
REFERENCE_DIR = REPO.parent / "shared" / "reference"


def golden_dir() -> Path:
    return Path(os.environ.get("RECAM_GOLDEN_DIR", str(DEFAULT_GOLDEN)))


@pytest.fixture
def golden():
    """`golden("name")` -> dict of the arrays of `<RECAM_GOLDEN_DIR>/name.npz`.

    With RECAM_GOLDEN_DIR set, a missing file fails the test; without it, a missing default
    folder skips the test, saying why.
    """

    def load(name: str) -> dict[str, np.ndarray]:
        path = golden_dir() / f"{name}.npz"
        if not path.is_file():
            if "RECAM_GOLDEN_DIR" in os.environ:
                pytest.fail(f"golden file {path} is missing (RECAM_GOLDEN_DIR={os.environ['RECAM_GOLDEN_DIR']})")
            pytest.skip(f"golden vectors not found at {path}; set RECAM_GOLDEN_DIR to the golden folder")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    return load


@pytest.fixture
def reference_voc12() -> Path:
    """The reference VOC id lists and labels (../shared/reference/voc12), or skip."""
    path = REFERENCE_DIR / "voc12"
    if not (path / "train_aug.txt").is_file():
        pytest.skip(f"reference VOC lists not found at {path}")
    return path


CONFIG_DIR = REPO / "configs"


def compose_config(overrides: list[str]):
    """Compose `configs/config.yaml` with overrides and convert to the typed `Config`."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recam.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return OmegaConf.to_object(compose("config", overrides=overrides))


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """Overrides for a tiny synthetic experiment in a session temp folder (debug=tiny).

    RECAM_TINY_BASE=<folder> keeps it there across sessions instead (development: `stage=all` then
    finds every stage up to date and takes seconds)."""
    base = Path(os.environ["RECAM_TINY_BASE"]) if os.environ.get("RECAM_TINY_BASE") else tmp_path_factory.mktemp("tiny")
    return [
        f"run.root={base / 'outputs'}",
        "run.name=tiny",
        f"dataset.root={base / 'data' / 'VOC2012'}",
        "dataset=synthetic",
        "debug=tiny",
    ]


@pytest.fixture(scope="session")
def tiny_all(tiny_run):
    """`stage=all` once per session on the tiny experiment: (config, results). Tests that change
    the run copy it first (or redirect their outputs with run.inputs)."""
    from recam.pipeline import run_stage

    cfg = compose_config([*tiny_run, "stage=all"])
    return cfg, run_stage(cfg)


def link_copy(source: Path, target: Path) -> Path:
    """A copy of a run folder made of hard links (no disk, no time; the tiny run is ~1 GB of weights).
    Safe because every write of the pipeline replaces a file (a new inode, `recam/io.py`); a test
    that changes a copied file itself must unlink it first."""
    import shutil

    shutil.copytree(source, target, copy_function=os.link, ignore=shutil.ignore_patterns("logs"))
    return target

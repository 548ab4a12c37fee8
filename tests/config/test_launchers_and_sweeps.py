"""The sweep files and the SLURM launcher config compose with Hydra's own config."""

from __future__ import annotations


import pytest
from hydra import compose, initialize_config_dir

from recam.config import register_configs
from recam.plan import PLAN, step_label
from tests.conftest import CONFIG_DIR

SWEEPS = sorted(p.stem for p in (CONFIG_DIR / "sweep").glob("*.yaml"))


def _compose(overrides: list[str]):
    register_configs()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


@pytest.mark.parametrize("sweep", SWEEPS)
def test_sweep_is_a_multirun_over_known_keys_and_steps(sweep: str) -> None:
    cfg = _compose(["experiment=demo", f"sweep={sweep}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN"
    params = dict(cfg.hydra.sweeper.params)
    assert params, sweep
    for key, values in params.items():
        section, field = key.split(".")
        assert field in cfg[section], key
        assert len(str(values).split(",")) >= 3
    labels = {step_label(step, overrides) for step, overrides in PLAN}
    assert set(cfg.stage.steps) <= labels
    assert cfg.run.name.startswith(f"sweep_{sweep}/")


def test_slurm_launcher_composes() -> None:
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose(["experiment=demo", "sweep=lambda", "hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 720


def test_local_launcher_is_the_basic_one() -> None:
    cfg = _compose(["hydra/launcher=local"])
    assert cfg.hydra.launcher._target_.endswith("BasicLauncher")

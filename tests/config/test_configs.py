"""Every experiment, stage and dataset file composes and validates; typos fail at start."""
from __future__ import annotations

from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException

from recam.config import Config
from recam.pipeline import _stages
from tests.conftest import CONFIG_DIR, compose_config

STAGE_FILES = sorted(p.stem for p in (CONFIG_DIR / "stage").glob("*.yaml"))
EXPERIMENTS = sorted(p.stem for p in (CONFIG_DIR / "experiment").glob("*.yaml"))


@pytest.mark.parametrize("stage", STAGE_FILES)
def test_every_stage_file_names_a_stage(stage: str) -> None:
    cfg = compose_config([f"stage={stage}"])
    assert isinstance(cfg, Config)
    assert cfg.stage.name == stage
    assert stage == "all" or stage in _stages()


def test_every_stage_has_a_config_file() -> None:
    assert set(_stages()) <= set(STAGE_FILES)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
@pytest.mark.parametrize("dataset", ["synthetic", "voc12"])
def test_experiments_compose(experiment: str, dataset: str) -> None:
    cfg = compose_config([f"experiment={experiment}", f"dataset={dataset}"])
    assert cfg.run.name
    assert cfg.cam.batch_size > 0 and cfg.recam.loss_weight > 0


def test_reference_defaults_are_the_spec_values() -> None:
    cfg = compose_config(["dataset=voc12", "stage=cam"])
    assert (cfg.cam.batch_size, cfg.cam.epochs, cfg.cam.crop_size, cfg.cam.lr) == (16, 5, 512, 0.1)
    assert (cfg.cam.head_lr_mult, cfg.cam.weight_decay, cfg.cam.momentum, cfg.cam.poly_power) == (10.0, 1e-4, 1e-4, 0.9)
    assert cfg.cam.resize_long == [320, 640]
    assert (cfg.recam.epochs, cfg.recam.lr, cfg.recam.backbone_lr_mult, cfg.recam.loss_weight) == (4, 5e-4, 0.1, 1.0)
    assert cfg.seeds.scales == [1.0, 0.5, 1.5, 2.0]
    assert (cfg.model.output_stride, cfg.model.freeze_upto, cfg.model.fixed_bn) == (16, "conv1", True)
    assert cfg.dataset.train_list == "train_aug"


@pytest.mark.parametrize("override", ["cam.epochz=3", "cam.epochs=abc", "stage=camm", "dataset=coco9"])
def test_typos_and_wrong_types_fail_at_start(override: str) -> None:
    with pytest.raises(ConfigCompositionException):
        compose_config([override])


def test_lambda_override() -> None:
    assert compose_config(["recam.loss_weight=0.25"]).recam.loss_weight == 0.25


def test_configs_folder_exists() -> None:
    assert Path(CONFIG_DIR / "config.yaml").is_file()

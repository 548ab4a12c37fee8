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


def test_coco14_paper_holds_every_setting_of_spec_11_6() -> None:
    cfg = compose_config(["experiment=coco14_paper"])
    assert cfg.dataset.name == "coco14" and cfg.dataset.protocol == "recam"
    assert (cfg.cam.batch_size, cfg.cam.epochs, cfg.cam.lr) == (16, 5, 0.1)
    assert (cfg.recam.batch_size, cfg.recam.epochs, cfg.recam.lr, cfg.recam.loss_weight) == (6, 4, 5e-4, 0.1)
    assert cfg.seeds.use_fused_weight is False and cfg.seeds.scales == [1.0, 0.5, 1.5, 2.0]
    assert cfg.eval_seeds.threshold == 0.15
    assert (cfg.ir_labels.fg_threshold, cfg.ir_labels.bg_threshold) == (0.35, 0.10)
    assert cfg.masks.bg_threshold == 0.25 and (cfg.masks.radius, cfg.masks.beta, cfg.masks.exp_times) == (5, 10.0, 8)
    assert {
        cfg.seeds.split,
        cfg.eval_seeds.split,
        cfg.ir_labels.split,
        cfg.irn.split,
        cfg.masks.split,
        cfg.eval_masks.split,
        cfg.seg.split,
    } == {"train"}
    assert (cfg.seg.iterations, cfg.seg.batch_size, cfg.seg.iter_size, cfg.seg.lr) == (100000, 10, 2, 2e-4)
    assert cfg.seg.lr * cfg.seg.head_lr_mult == pytest.approx(
        2e-3
    ) and cfg.seg.lr * cfg.seg.head_bias_lr_mult == pytest.approx(4e-3)
    assert cfg.eval_seg.split == "val" and cfg.dataset.root.endswith("recam_view_recam")
    assert compose_config(["experiment=coco14_paper", "dataset.protocol=coco2voc"]).dataset.root.endswith("coco2voc")


def test_default_sweeps_are_the_protocol_range() -> None:
    cfg = compose_config([])
    assert cfg.eval_seeds.sweep == [0.15, 0.34, 0.01] and cfg.eval_masks.sweep == [0.15, 0.34, 0.01]
    demo = compose_config(["experiment=demo"])
    assert demo.eval_seeds.sweep == [0.05, 0.95, 0.01]


def test_the_demo_reads_recam_out_with_w_alone_at_lambda_quarter_and_the_paper_as_the_reference() -> None:
    # docs/regime.md (3 seeds): at the demo's resolution W (.) V at lambda 1 loses to CAM by 2.7 points
    # at the best t; W alone at lambda 0.25 is 1.5 above (2.3 at the fixed t)
    demo, paper = compose_config(["experiment=demo"]), compose_config(["experiment=voc12_paper"])
    assert demo.seeds.use_fused_weight is False and paper.seeds.use_fused_weight is True
    assert compose_config(["experiment=demo_auto"]).seeds.use_fused_weight is False
    # lambda 0.25 and the paper's mask route from the ReCAM seeds
    assert demo.recam.loss_weight == 0.25 and demo.ir_labels.seeds == "recam" and demo.masks.seeds == "recam"
    assert paper.recam.loss_weight == 1.0


def test_the_alternative_deeplab_schedule() -> None:
    cfg = compose_config(["experiment=voc12_seg_30k"])
    assert (cfg.seg.batch_size, cfg.seg.iter_size, cfg.seg.iterations, cfg.seg.lr) == (10, 1, 30000, 2.5e-4)
    assert cfg.dataset.name == "voc12" and cfg.seg.loss == "ce" and cfg.eval_seg.crf_image == "clean"
    assert compose_config(["seg.loss=balanced", "seg.pretrained=advcam:x.pth"]).seg.loss == "balanced"

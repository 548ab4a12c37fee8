"""Stage `pretrain` on a tiny world: the cache, `*.pretrained=synthetic`, the plan, resume."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
import torch

from recam.engine.checkpoint import load_checkpoint
from recam.errors import RecamInputError
from recam.pipeline import run_stage
from recam.plan import plan_steps
from recam.stages.pretrain import cache_folder
from recam.validate import validate
from tests.conftest import compose_config
from tests.e2e.test_kill_resume import _kill_when_it_moves

TINY = [
    "pretrain.num_classes=6",
    "pretrain.images_per_class=8",
    "pretrain.val_per_class=2",
    "pretrain.image_size=32",
    "pretrain.epochs=2",
    "pretrain.batch_size=8",
    "pretrain.lr=0.02",
]


def _overrides(base: Path, *extra: str) -> list[str]:
    return [
        f"run.root={base / 'outputs'}",
        "run.name=pt",
        f"dataset.root={base / 'data' / 'VOC2012'}",
        "dataset=synthetic",
        "debug=tiny",
        f"pretrain.cache_dir={base / 'cache'}",
        *TINY,
        *extra,
    ]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    base = tmp_path_factory.mktemp("pretrain")
    cfg = compose_config(_overrides(base, "stage=pretrain"))
    results = run_stage(cfg)
    return base, cfg, results


def test_pretrain_writes_the_backbone_into_the_cache_keyed_by_its_settings(pretrained) -> None:
    base, cfg, results = pretrained
    folder = cache_folder(cfg)
    assert folder.parent == base / "cache" and folder.name.startswith("resnet18-")
    assert (folder / "DONE").is_file() and (folder / "classes.json").is_file()
    backbone = torch.load(folder / "backbone.pth", weights_only=True)
    assert "conv1.weight" in backbone and not any(k.startswith("fc.") for k in backbone)
    assert results["train_images"] == 48 and results["val_images"] == 12 and len(results["history"]) == 2
    assert 0.0 <= results["val_top1"] <= 1.0
    # Fingerprints of the rendered world, the initial and the final weights (cross-machine comparisons).
    prints = results["fingerprints"]
    assert set(prints) == {"train_images", "val_images", "init_weights", "backbone"}
    assert all(len(v) == 16 for v in prints.values()) and prints["init_weights"] != prints["backbone"]
    # The key covers what changes the weights, not where the cache is or how many processes render it.
    same = compose_config(_overrides(base, "stage=pretrain", "pretrain.workers=1", "pretrain.log_every=3"))
    assert cache_folder(same) == folder
    moved = compose_config(_overrides(base, "stage=pretrain", f"pretrain.cache_dir={base / 'elsewhere'}"))
    assert cache_folder(moved).name == folder.name
    assert cache_folder(compose_config(_overrides(base, "pretrain.epochs=3"))) != folder
    assert cache_folder(compose_config(_overrides(base, "pretrain.seed=1"))) != folder
    # A second run (another experiment, another runtime.seed) finds it finished and reuses it.
    before = (folder / "DONE").read_text()
    run_stage(compose_config(_overrides(base, "stage=pretrain", "run.name=other", "runtime.seed=5")))
    assert (folder / "DONE").read_text() == before


def test_synthetic_weights_load_where_imagenet_would(pretrained) -> None:
    base, cfg, _ = pretrained
    backbone = torch.load(cache_folder(cfg) / "backbone.pth", weights_only=True)
    extra = ["model.pretrained=synthetic", "model.fixed_bn=true", "cam.lr=0.001", "irn.pretrained=synthetic"]
    run_stage(compose_config(_overrides(base, "stage=prepare", *extra)))
    run_stage(compose_config(_overrides(base, "stage=cam", *extra)))
    cam = load_checkpoint(base / "outputs" / "pt" / "cam" / "model.pt")["model"]
    # conv1 is frozen (freeze_upto=conv1) and BN fixed: they keep the pretrained values exactly.
    torch.testing.assert_close(cam["backbone.conv1.weight"], backbone["conv1.weight"], rtol=0, atol=0)
    torch.testing.assert_close(cam["backbone.bn1.running_mean"], backbone["bn1.running_mean"], rtol=0, atol=0)
    inputs = (base / "outputs" / "pt" / "cam" / "inputs.json").read_text()
    assert str(cache_folder(cfg)) in inputs  # a new pretraining makes cam stale
    from recam.stages.irn import build_irn_from_config
    from recam.rundir import RunDir

    irn_cfg = compose_config(_overrides(base, *extra))
    irn_cfg.run.inputs["pretrain"] = str(cache_folder(irn_cfg))
    irn = build_irn_from_config(irn_cfg.irn, RunDir(irn_cfg.run))
    torch.testing.assert_close(irn.backbone.conv1.weight, backbone["conv1.weight"], rtol=0, atol=0)


def test_the_plan_has_pretrain_only_when_a_stage_loads_it() -> None:
    assert "pretrain" not in [s for s, _ in plan_steps([], "synthetic")]
    assert [s for s, _ in plan_steps([], "synthetic", pretrain=True)][:3] == ["prepare", "pretrain", "cam"]


def test_a_backbone_of_another_arch_is_refused_before_anything_runs(tmp_path) -> None:
    cfg = compose_config(_overrides(tmp_path, "stage=cam", "model.pretrained=synthetic", "model.arch=resnet50"))
    with pytest.raises(RecamInputError, match=r"model.pretrained=synthetic loads the pretrain stage's resnet18"):
        validate(cfg, paths=False)
    run_stage(compose_config(_overrides(tmp_path, "stage=prepare")))
    cfg = compose_config(_overrides(tmp_path, "stage=cam", "model.pretrained=synthetic"))
    cfg.run.inputs["pretrain"] = str(tmp_path / "nothing")
    with pytest.raises(RecamInputError, match=r"run `stage=pretrain`"):
        run_stage(cfg)
    assert not (tmp_path / "outputs" / "pt" / "cam").exists()


def test_killed_pretraining_resumes_to_the_same_weights(pretrained, tmp_path) -> None:
    _, cfg, _ = pretrained
    overrides = _overrides(tmp_path, "stage=pretrain")
    folder = cache_folder(compose_config(overrides))
    command = [sys.executable, "-m", "recam.train", *overrides, f"hydra.run.dir={tmp_path}/hydra"]
    staged = folder.with_name(folder.name + ".next")
    assert _kill_when_it_moves(command, staged, "checkpoints/last.pt"), "finished before it could be killed"
    assert (staged / "checkpoints" / "last.pt").is_file() and not folder.exists()
    run_stage(compose_config(overrides))
    want = torch.load(cache_folder(cfg) / "backbone.pth", weights_only=True)
    got = torch.load(folder / "backbone.pth", weights_only=True)
    assert got.keys() == want.keys()
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=key)
    shutil.rmtree(tmp_path / "cache")

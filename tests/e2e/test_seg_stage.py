"""Stages `seg` and `eval_seg` on the tiny synthetic set (CPU, 3 iterations): pseudo masks from a
faked `masks/irn` folder (GT-derived PNGs), the GT upper bound, results, summary and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from recam.engine.checkpoint import load_checkpoint, save_checkpoint
from recam.errors import RecamInputError
from recam.io import load_label_png, save_label_png
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config


def overrides(tiny_run: list[str], name: str) -> list[str]:
    return [o for o in tiny_run if not o.startswith("run.name=")] + [f"run.name={name}"]


def fake_masks(cfg) -> Path:
    """masks/irn holding the SBD-like GT of every train_aug id, finished like a real stage."""
    rundir = RunDir(cfg.run)
    ids = (rundir.stage_dir("prepare") / "train_aug.txt").read_text().split()
    out = rundir.stage_dir("masks", "irn")
    for image_id in ids:
        save_label_png(
            out / f"{image_id}.png", load_label_png(Path(cfg.dataset.root) / "SegmentationClassAug" / f"{image_id}.png")
        )
    rundir.finish(out, {"fake": True}, {"fake": True})
    return out


@pytest.fixture(scope="module")
def seg_run(tiny_run):
    base = overrides(tiny_run, "seg_tiny")
    cfg = compose_config([*base, "stage=prepare"])
    run_stage(cfg)
    masks = fake_masks(cfg)
    trained = {
        labels: run_stage(compose_config([*base, "stage=seg", f"seg.labels={labels}"])) for labels in ("pseudo", "gt")
    }
    evaluated = {
        labels: run_stage(compose_config([*base, "stage=eval_seg", f"eval_seg.labels={labels}"]))
        for labels in ("pseudo", "gt")
    }
    return base, cfg, masks, trained, evaluated


def test_train_and_eval_write_results_and_the_summary(seg_run) -> None:
    base, cfg, _, trained, evaluated = seg_run
    rundir = RunDir(cfg.run)
    val_ids = (rundir.stage_dir("prepare") / "val.txt").read_text().split()
    summary = json.loads(rundir.summary_path.read_text())
    for labels in ("pseudo", "gt"):
        seg_dir, eval_dir = rundir.stage_dir("seg", labels), rundir.stage_dir("eval_seg", labels)
        assert (seg_dir / "DONE").is_file() and (seg_dir / "model.pt").is_file()
        last = load_checkpoint(seg_dir / "checkpoints" / "last.pt")
        assert last["iteration"] == 3 and last["model_config"]["name"] == "deeplabv2_resnet18"
        assert [h["iteration"] for h in trained[labels]["history"]] == [1, 2, 3]
        assert all(np.isfinite(h["loss"]) for h in trained[labels]["history"])
        results = json.loads((eval_dir / "results.json").read_text())
        assert results["images"] == len(val_ids) and results["split"] == "val"
        assert 0.0 <= results["miou"] <= 1.0 and 0.0 <= results["miou_crf"] <= 1.0
        assert set(results["iou"]) == {"background", *cfg_class_names(rundir)}
        entry = summary[f"eval_seg/{labels}"]
        assert entry == {
            "miou": results["miou"],
            "miou_crf": results["miou_crf"],
            "miou_crf_reference": results["miou_crf_reference"],
            "split": "val",
            "images": len(val_ids),
        }
        # the default CRF image is the clean one; the reference (wrapped mean-subtracted) image is scored beside it
        assert results["crf_image"] == "clean" and results["miou_crf_clean"] == results["miou_crf"]
        assert 0.0 <= results["miou_crf_reference"] <= 1.0
        assert "mIoU" in (eval_dir / "results.md").read_text()
        for kind in ("pred", "pred_crf", "pred_crf_reference"):
            assert sorted(p.stem for p in (eval_dir / kind).glob("*.png")) == sorted(val_ids)
    # labels=gt trains on the VOC train split's SegmentationClass masks (with their 255 band)
    assert trained["gt"]["images"] == len((rundir.stage_dir("prepare") / "train.txt").read_text().split())
    assert trained["pseudo"]["images"] == len((rundir.stage_dir("prepare") / "train_aug.txt").read_text().split())


def cfg_class_names(rundir: RunDir) -> list[str]:
    return (rundir.stage_dir("prepare") / "class_names.txt").read_text().split()


def test_interrupted_eval_resumes_to_the_same_numbers(seg_run, tmp_path) -> None:
    base, cfg, _, _, evaluated = seg_run
    shutil.copytree(Path(cfg.run.root) / "seg_tiny", tmp_path / "copy")
    again = [o for o in base if not o.startswith("run.root=")] + [f"run.root={tmp_path}", "run.name=copy"]
    folder = tmp_path / "copy" / "eval_seg" / "pseudo"
    (folder / "DONE").unlink()
    for path in sorted((folder / "pred").glob("*.png"))[::2]:
        path.unlink()
    results = run_stage(compose_config([*again, "stage=eval_seg", "eval_seg.labels=pseudo"]))
    assert results["miou"] == evaluated["pseudo"]["miou"] and results["miou_crf"] == evaluated["pseudo"]["miou_crf"]


def test_missing_masks_folder_names_the_stage(tiny_run, seg_run, tmp_path) -> None:
    _, cfg, _, _, _ = seg_run
    base = overrides(tiny_run, "seg_tiny") + [f"+run.inputs.masks={tmp_path / 'nothing'}"]
    with pytest.raises(RecamInputError, match="stage=masks masks.method=irn"):
        run_stage(compose_config([*base, "stage=seg"]))


def test_missing_or_bad_mask_files_are_named(tiny_run, seg_run, tmp_path) -> None:
    _, cfg, masks, _, _ = seg_run
    broken = tmp_path / "masks"
    shutil.copytree(masks.parent, broken)
    victim = sorted((broken / "irn").glob("*.png"))[1]
    victim.unlink()
    base = overrides(tiny_run, "seg_tiny") + [f"+run.inputs.masks={broken}", f"+run.inputs.seg={tmp_path / 'seg'}"]
    # the masks' manifest no longer matches: named before seg reads a single label
    with pytest.raises(RecamInputError, match=rf"irn changed after it finished .* {victim.stem}.png"):
        run_stage(compose_config([*base, "stage=seg"]))
    save_label_png(victim, np.full(load_label_png(masks / victim.name).shape, 42, np.uint8))
    done = json.loads((broken / "irn" / "DONE").read_text())  # as if the masks stage itself wrote it
    done["manifest"][victim.name] = victim.stat().st_size
    (broken / "irn" / "DONE").write_text(json.dumps(done))
    with pytest.raises(RecamInputError, match=rf"{victim.name} has values \[42\]"):
        run_stage(compose_config([*base, "stage=seg"]))


def test_checkpoint_of_other_classes_or_arch_is_refused(tiny_run, seg_run, tmp_path) -> None:
    _, cfg, _, _, _ = seg_run
    source = RunDir(cfg.run).stage_dir("seg", "pseudo")
    for name, edit in (
        ("classes", lambda c: c.update(class_names=["cat", "dog"])),
        ("arch", lambda c: c["model_config"].update(name="deeplabv2_resnet34")),
    ):
        fake = tmp_path / name / "pseudo"
        shutil.copytree(source, fake)
        checkpoint = load_checkpoint(fake / "model.pt")
        edit(checkpoint)
        save_checkpoint(fake / "model.pt", checkpoint)
        base = overrides(tiny_run, "seg_tiny") + [
            f"+run.inputs.seg={fake.parent}",
            f"+run.inputs.eval_seg={tmp_path / name / 'eval'}",
        ]
        with pytest.raises(RecamInputError, match="classes" if name == "classes" else "does not match the model"):
            run_stage(compose_config([*base, "stage=eval_seg"]))


def test_trained_model_predicts_like_its_saved_pngs(seg_run) -> None:
    """The saved prediction of a val image equals a fresh forward of model.pt."""
    from recam.data.transforms import normalize, to_chw
    from recam.data.voc12 import load_image
    from recam.seg.inference import predict_probs
    from recam.stages.seg import load_trained

    _, cfg, _, _, _ = seg_run
    rundir = RunDir(cfg.run)
    image_id = (rundir.stage_dir("prepare") / "val.txt").read_text().split()[0]
    model = load_trained(rundir.stage_dir("seg", "pseudo") / "model.pt", cfg_class_names(rundir)).eval()
    image = load_image(cfg.dataset.root, image_id)
    x = torch.from_numpy(to_chw(normalize(image, cfg.dataset.mean, cfg.dataset.std)))[None]
    pred = predict_probs(model, x).argmax(0).numpy()
    np.testing.assert_array_equal(
        load_label_png(rundir.stage_dir("eval_seg", "pseudo") / "pred" / f"{image_id}.png"), pred
    )

"""`visualize` on the tiny run (CPU): CAM vs ReCAM on one scale, a panel per finished method, the
palette's legend, the page; the optional recam stage is an input once finished."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
from PIL import Image

from recam.data.datasets import read_image
from recam.data.voc12 import load_mask
from recam.io import load_npz
from recam.pipeline import run_stage
from recam.rundir import RunDir, finished_folders
from recam.stages.common import load_prepared
from recam.stages.visualize import label_rows
from recam.viz.grids import compare_maps
from recam.viz.overlays import legend_rows, text_band_height
from tests.conftest import compose_config, link_copy

# One CAM method keeps each run to seconds; train: the split whose images have seeds and masks.
QUICK = ["stage=visualize", "visualize.methods=[cam]", "visualize.num_images=1"]


def copied_run(tiny_all, tmp_path: Path) -> list[str]:
    cfg, _ = tiny_all
    link_copy(Path(cfg.run.root) / "tiny", tmp_path / "copy")
    return [f"run.root={tmp_path}", "run.name=copy", f"dataset.root={cfg.dataset.root}", "debug=tiny"]


def test_cam_vs_recam_labels_and_legend(tiny_all, tmp_path) -> None:
    overrides = copied_run(tiny_all, tmp_path)
    cfg = compose_config([*overrides, *QUICK, "visualize.split=train"])
    results = run_stage(cfg)
    rundir = RunDir(cfg.run)
    folder, (image_id,) = rundir.stage_dir("visualize"), results["images"]
    assert results["cam_vs_recam"] == [image_id]
    data = load_prepared(rundir, cfg.dataset)
    keys = np.flatnonzero(data.labels[image_id]).tolist()
    names = [data.class_names[k] for k in keys]

    # The picture is the CAM and ReCAM seed maps (as seeds/cam and seeds/recam exported them: the
    # same functions and settings) side by side, one row per GT class, on the shared scale. The
    # stage computes them afresh, without the export's BN folding: float-rounding close.
    ground_truth = load_mask(cfg.dataset.root, image_id)
    expected = compare_maps(
        read_image(cfg.dataset.root, image_id),
        {m: load_npz(rundir.stage_dir("seeds", m.lower()) / f"{image_id}.npz")["high_res"] for m in ("CAM", "ReCAM")},
        names,
        np.stack([ground_truth == k + 1 for k in keys]),
        cfg.visualize.display_scale,
        cfg.visualize.font_size,
    )
    picture = np.asarray(Image.open(folder / image_id / "cam_vs_recam.png").convert("RGB"))
    assert picture.shape == expected.shape
    assert picture.shape[0] > len(keys) * (text_band_height() + ground_truth.shape[0] * cfg.visualize.display_scale)
    difference = np.abs(picture.astype(int) - expected)
    assert difference.max() <= 2 and (difference > 0).mean() < 0.01

    # labels.png: a panel for every finished seeds / masks / eval_seg folder, seeds and masks real
    # for a train image, captioned with the folder.
    rows = label_rows(rundir, ground_truth, image_id)
    captions = [text for row in rows for _, text in row]
    assert captions[0] == "ground truth"
    for stage in ("seeds", "masks"):
        for method in finished_folders(rundir.stage_dir(stage)):
            (label,) = [label for row in rows for label, text in row if text.startswith(f"{stage}/{method.name}")]
            assert label is not None and label.shape == ground_truth.shape
    assert any(text.startswith("seeds/recam t=") for text in captions)
    assert [text for _, text in rows[1]] == ["masks/crf", "masks/irn"]
    assert all(
        any(text.startswith(f"eval_seg/{f.name}") for text in captions)
        for f in finished_folders(rundir.stage_dir("eval_seg"))
    )

    # The legend: background, every class of prepare/class_names.txt, ignore (the GT's boundaries).
    assert (ground_truth == 255).any()
    assert [name for _, name, _ in legend_rows(data.class_names, ignore=True)] == [
        "background",
        *(rundir.stage_dir("prepare") / "class_names.txt").read_text().split(),
        "ignore",
    ]
    with Image.open(folder / "legend.png") as legend:
        assert legend.height == 8 * text_band_height() and legend.width > 2 * 100  # 10 entries: 2 columns

    page = (folder / "index.html").read_text()
    linked = re.findall(r"src='([^']+)'", page)
    assert linked[0] == "legend.png" and f"{image_id}/cam_vs_recam.png" in linked and f"{image_id}/labels.png" in linked
    assert all((folder / path).is_file() for path in linked) and "255 = ignore" in page


def test_recam_is_optional_and_an_input_once_finished(tiny_all, tmp_path) -> None:
    overrides = copied_run(tiny_all, tmp_path)
    rundir = RunDir(compose_config(overrides).run)
    folder = rundir.stage_dir("visualize")
    (rundir.stage_dir("recam") / "DONE").unlink()  # a hard link: the shared run keeps its own
    results = run_stage(compose_config([*overrides, *QUICK]))
    assert results["cam_vs_recam"] == [] and not list(folder.glob("*/cam_vs_recam.png"))
    assert "the recam stage is not finished" in (folder / "index.html").read_text()
    assert str(rundir.stage_dir("recam") / "DONE") not in json.loads((folder / "inputs.json").read_text())
    before = (folder / "DONE").read_text()

    # recam finishes (here with another lambda): the pictures are redrawn, now with ReCAM, then skipped.
    run_stage(compose_config([*overrides, "stage=recam", "recam.loss_weight=0.5"]))
    results = run_stage(compose_config([*overrides, *QUICK]))
    assert (
        results["cam_vs_recam"] == results["images"] and (folder / results["images"][0] / "cam_vs_recam.png").is_file()
    )
    assert str(rundir.stage_dir("recam") / "DONE") in json.loads((folder / "inputs.json").read_text())
    after = (folder / "DONE").read_text()
    assert after != before
    run_stage(compose_config([*overrides, *QUICK]))
    assert (folder / "DONE").read_text() == after

"""The CAM family in the pipeline on a tiny synthetic set (CPU): seeds.method=<family method>,
eval_seeds unchanged, the cam_methods table and the visualize page."""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from recam.io import load_npz, read_json
from recam.pipeline import run_stage
from recam.rundir import RunDir
from tests.conftest import compose_config

# A few images at one scale keep every export to seconds on CPU.
FAST = [
    "seeds.top_k=8",
    "seeds.n_samples=2",
    "seeds.chunk_size=16",
    "seeds.split=train",
    "seeds.scales=[1.0]",
    "dataset.max_images=2",
]


@pytest.fixture(scope="module")
def trained(tiny_run):
    """prepare + cam of the session's tiny run (shared with test_tiny_pipeline, trained once per
    session), read through run.inputs by a run of this module's own (`tiny_family`), which also
    exports the 2 images' CAM seeds as the reference format."""
    for stage in ("prepare", "cam"):
        run_stage(compose_config([*tiny_run, f"stage={stage}"]))
    shared = RunDir(compose_config(tiny_run).run)
    overrides = [o for o in tiny_run if not o.startswith("run.name=")] + [
        "run.name=tiny_family",
        f"+run.inputs.prepare={shared.stage_dir('prepare')}",
        f"+run.inputs.cam={shared.stage_dir('cam')}",
    ]
    run_stage(compose_config([*overrides, "stage=seeds", "seeds.method=cam", *FAST]))
    return overrides, RunDir(compose_config(overrides).run)


@pytest.mark.parametrize("method", ["gradcam", "scorecam"])
def test_family_seeds_are_exported_in_the_seed_format_and_scored(method, trained) -> None:
    overrides, rundir = trained
    run_stage(compose_config([*overrides, "stage=seeds", f"seeds.method={method}", *FAST]))
    results = run_stage(
        compose_config([*overrides, "stage=eval_seeds", f"eval_seeds.method={method}", "dataset.max_images=2"])
    )
    assert 0.0 < results["miou"] <= 1.0 and results["threshold_fixed"] == 0.15
    folder = rundir.stage_dir("seeds", method)
    exported = read_json(folder / "results.json")
    assert exported["peak_memory_mb"] >= 0 and exported["memory_measure"] == "cpu_rss_delta"
    reference = rundir.stage_dir("seeds", "cam")
    assert len(list(folder.glob("*.npz"))) == 2
    for path in sorted(folder.glob("*.npz")):
        seed, cam_seed = load_npz(path), load_npz(reference / path.name)
        np.testing.assert_array_equal(seed["keys"], cam_seed["keys"])
        assert seed["cam"].shape == cam_seed["cam"].shape and seed["high_res"].shape == cam_seed["high_res"].shape
        assert seed["cam"].dtype == np.float32 and 0 <= seed["high_res"].min() and seed["high_res"].max() < 1


def test_resumed_noisy_export_writes_the_same_files(trained) -> None:
    overrides, rundir = trained
    command = [*overrides, "stage=seeds", "seeds.method=smoothgradcampp", *FAST]
    run_stage(compose_config(command))
    folder = rundir.stage_dir("seeds", "smoothgradcampp")
    clean = {p.name: load_npz(p)["high_res"] for p in folder.glob("*.npz")}
    for path in sorted(folder.glob("*.npz"))[::2]:
        path.unlink()
    (folder / "DONE").unlink()
    run_stage(compose_config(command))
    for name, high_res in clean.items():
        np.testing.assert_array_equal(load_npz(folder / name)["high_res"], high_res)


def test_family_settings_do_not_touch_cam_seeds(trained) -> None:
    overrides, rundir = trained
    done = rundir.stage_dir("seeds", "cam") / "DONE"
    before = done.read_text()
    run_stage(
        compose_config([*overrides, "stage=seeds", "seeds.method=cam", *FAST, "seeds.top_k=3", "seeds.noise_seed=4"])
    )
    assert done.read_text() == before


def test_cam_methods_table(trained, capsys) -> None:
    overrides, rundir = trained
    results = run_stage(
        compose_config(
            [
                *overrides,
                "stage=cam_methods",
                "cam_methods.methods=[cam,ablationcam]",
                "cam_methods.max_images=2",
                "cam_methods.top_k=8",
            ]
        )
    )
    assert list(results["methods"]) == ["cam", "ablationcam"] and results["images"] == 2
    for record in results["methods"].values():
        assert 0 < record["miou"] <= 1 and record["seconds_per_image"] > 0 and record["peak_memory_mb"] >= 0
    folder = rundir.stage_dir("cam_methods")
    assert (folder / "seeds" / "ablationcam" / "DONE").is_file() and (
        folder / "eval_seeds" / "ablationcam" / "DONE"
    ).is_file()
    table = (folder / "results.md").read_text()
    assert "Ablation-CAM" in table and "| CAM |" in table
    assert "Ablation-CAM" in capsys.readouterr().out
    # The sweep is a nested run: its seeds, evaluations and summary stay in its folder.
    assert len(list((folder / "seeds" / "cam").glob("*.npz"))) == 2
    assert set(read_json(folder / "summary.json")) == {"eval_seeds/cam", "eval_seeds/ablationcam"}


def test_visualize_writes_pictures_and_an_index(trained) -> None:
    overrides, rundir = trained
    results = run_stage(
        compose_config(
            [
                *overrides,
                "stage=visualize",
                "visualize.num_images=1",
                "visualize.top_k=4",
                "visualize.split=train",
                "seeds.n_samples=1",
                "visualize.methods=[cam,scorecam]",
            ]
        )
    )
    folder = rundir.stage_dir("visualize")
    page = (folder / "index.html").read_text()
    pictures = re.findall(r"src='([^']+)'", page)
    # The legend, then per image overlays, boxes, labels, guided, features; no CAM vs ReCAM: this run
    # has no recam stage, and the page says so.
    assert pictures[0] == "legend.png" and len(pictures) == 1 + 5 * len(results["images"])
    assert results["cam_vs_recam"] == [] and "the recam stage is not finished" in page
    for picture in pictures:
        with Image.open(folder / picture) as image:
            assert image.mode == "RGB" and image.width > 32
    image_id = results["images"][0]
    with Image.open(folder / image_id / "overlays.png") as overlays:
        width = overlays.size[0]
    assert width > 3 * 48 * 2  # image + 2 methods, display_scale 2
    # The image's seeds exist (test order: the seed tests ran first) and are shown next to the GT.
    with Image.open(folder / image_id / "labels.png") as labels:
        assert labels.width > 2 * 48 * 2

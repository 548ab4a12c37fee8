"""`scripts/gpu_bench.py --tiny` end to end on CPU: every stage runs through the real stage code,
the report has a rate and a VOC projection per stage, and the seed-export variants agree."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from recam.io import load_npz

REPO = Path(__file__).resolve().parents[2]


def test_gpu_bench_tiny_runs_every_stage(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "gpu_bench.py"), "--tiny", "--keep", "--out", str(tmp_path / "bench")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads((tmp_path / "bench" / "gpu_bench.json").read_text())
    stages = report["stages"]
    expected = {
        "prepare",
        "cam",
        "recam",
        "seeds",
        "eval_seeds",
        "ir_labels",
        "irn",
        "masks",
        "eval_masks",
        "seg",
        "eval_seg",
        *[f"seeds_val_amp{a}_bucket{b}" for a in ("off", "on") for b in (8, 1)],
        "seeds_val_ampoff_bucket8_resize_on_device",
    }
    assert set(stages) == expected
    assert all(r["ok"] for r in stages.values()), {n: r.get("error") for n, r in stages.items()}
    for name in expected - {"prepare"}:
        assert stages[name]["images_per_s"] > 0, name
    for name in ("cam", "recam", "seeds", "ir_labels", "irn", "masks", "seg", "eval_seg"):
        assert stages[name]["projected_s_at_voc"] > 0, name
    assert stages["seg"]["iterations_per_s"] > 0
    assert report["projected_total_s"] == round(sum(r.get("projected_s_at_voc", 0.0) for r in stages.values()), 1)
    assert "| seeds_val_ampon_bucket1 |" in (tmp_path / "bench" / "gpu_bench.md").read_text()
    # Bucketed and one-at-a-time exports are the same numbers (AMP off; float noise of the batch size only).
    outputs = tmp_path / "bench" / "work" / "outputs"
    bucketed = sorted((outputs / "seeds_val_ampoff_bucket8" / "seeds" / "recam").glob("*.npz"))
    assert bucketed
    for path in bucketed:
        alone = load_npz(outputs / "seeds_val_ampoff_bucket1" / "seeds" / "recam" / path.name)
        np.testing.assert_allclose(load_npz(path)["high_res"], alone["high_res"], rtol=1e-5, atol=1e-6)
        # every scale made on the device: other grey levels (rounding), the same seeds to well under 0.05
        on_device = load_npz(outputs / "seeds_val_ampoff_bucket8_resize_on_device" / "seeds" / "recam" / path.name)
        assert np.abs(on_device["high_res"].astype(np.float32) - alone["high_res"].astype(np.float32)).max() < 0.05

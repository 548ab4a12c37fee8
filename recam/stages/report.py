"""Stage `report`: gather the experiment's results into `report.md` and print the table."""
from __future__ import annotations

import logging

import torch

from recam.config import Config
from recam.io import markdown_table, read_json, write_text
from recam.pipeline import RunDir

log = logging.getLogger(__name__)


def write_report(cfg: Config, rundir: RunDir) -> str:
    """Write `<experiment>/report.md` (classifier figures + every summary.json entry) and print it."""
    lines = [f"# Experiment `{cfg.run.name}`", "",
             f"dataset `{cfg.dataset.name}` ({cfg.dataset.root}), model `{cfg.model.arch}` "
             f"(pretrained: {cfg.model.pretrained})", ""]
    for stage in ("cam", "recam"):
        results = rundir.stage_dir(stage) / "results.json"
        if results.is_file():
            r = read_json(results)
            lines.append(f"- `{stage}`: val mAP {r['val_map']:.4f}, val loss {r['val_loss']:.4f}, "
                         f"{r['images_per_s']:.1f} images/s (last epoch)")
    summary = read_json(rundir.summary_path) if rundir.summary_path.is_file() else {}
    if summary:
        rows = [[key, f"{100 * e['miou']:.2f}", e.get("threshold", "-"),
                 f"{100 * e['miou_fixed']:.2f}" if "miou_fixed" in e else "-", e.get("threshold_fixed", "-")]
                for key, e in summary.items()]
        lines += ["", markdown_table(["artifact", "mIoU % (best t)", "best t", "mIoU % (fixed t)", "fixed t"], rows)]
    text = "\n".join(lines) + "\n"
    write_text(rundir.root / "report.md", text)
    print("\n" + text)
    return text


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    return {"report": write_report(cfg, rundir)}

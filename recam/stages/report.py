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
        def fmt(value, scale: float = 1.0, digits: int = 2) -> str:
            return "-" if value is None else f"{scale * value:.{digits}f}"

        rows = [[key, fmt(e["miou"], 100), fmt(e.get("threshold")), fmt(e.get("miou_fixed"), 100),
                 fmt(e.get("threshold_fixed"))] for key, e in summary.items()]
        lines += ["", markdown_table(["artifact", "mIoU % (best t)", "best t", "mIoU % (fixed t)", "fixed t"], rows)]
    text = "\n".join(lines) + "\n"
    write_text(rundir.root / "report.md", text)
    print("\n" + text)
    return text


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    return {"report": write_report(cfg, rundir)}

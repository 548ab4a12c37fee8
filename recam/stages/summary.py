"""Stage `summary`: gather many runs (a sweep) into one table (markdown + CSV) and a plot.

Scans `summary.runs` (default `run.root`) for run folders (those holding a `summary.json`),
reads every run's evaluation entries and the config slices its stages recorded (`config.json`),
and finds the swept settings: `summary.key`, or else every config value that differs between the
runs. Writes `summary.md`, `summary.csv` and `summary.png` (mIoU against the swept value) into
the scanned folder and prints the table.
"""

from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any

import torch

from recam.config import Config
from recam.errors import RecamInputError
from recam.io import atomic_write_with, markdown_table, read_json, write_text
from recam.rundir import RunDir

log = logging.getLogger(__name__)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else key, item, out)
    else:
        out[prefix] = value


def run_settings(run: Path) -> dict[str, Any]:
    """Every config value the run's stages recorded, as dotted keys (`recam.loss_weight`)."""
    settings: dict[str, Any] = {}
    for path in sorted([*run.glob("*/config.json"), *run.glob("*/*/config.json")]):
        _flatten("", read_json(path), settings)
    return settings


def find_runs(folder: Path) -> list[Path]:
    return sorted(p.parent for p in folder.rglob("summary.json") if p.parent.is_dir())


def gather(folder: Path, key: str | None = None) -> tuple[list[str], list[dict[str, Any]]]:
    """(swept keys, one row per run: {run, <swept keys>, <eval key>: miou, ...})."""
    runs = find_runs(folder)
    if not runs:
        raise RecamInputError(
            f"recam: no run with a summary.json under {folder} - run the sweep first "
            "(make sweep-lambda) or point summary.runs at its folder"
        )
    settings = {run: run_settings(run) for run in runs}
    if key:
        keys = [key]
        missing = [str(r) for r in runs if key not in settings[r]]
        if missing:
            raise RecamInputError(f"recam: summary.key={key} is not in the recorded config of {missing[0]}")
    else:
        names = sorted({k for s in settings.values() for k in s})
        keys = [k for k in names if len({repr(s.get(k)) for s in settings.values()}) > 1]
    rows = []
    for run in runs:
        row: dict[str, Any] = {"run": str(run.relative_to(folder)) or "."}
        row.update({k: settings[run].get(k) for k in keys})
        for entry, values in read_json(run / "summary.json").items():
            if "miou" not in values and "gt_known_loc" in values:  # eval_loc: boxes, no mIoU
                row[f"{entry} (GT-known loc)"] = values["gt_known_loc"]
                continue
            if "miou" not in values and "targets_met" in values:  # report/regime: the issue-12 targets
                row["regime targets met"] = f"{values['targets_met']}/{values['targets']}"
                continue
            row[entry] = values.get("miou")
            if values.get("miou_fixed") is not None:
                row[f"{entry} (fixed t)"] = values["miou_fixed"]
        rows.append(row)
    return keys, rows


def plot(keys: list[str], rows: list[dict[str, Any]], columns: list[str], path: Path) -> bool:
    """mIoU against the first swept key (numeric values only); False if nothing to draw."""
    numeric = [r for r in rows if keys and isinstance(r.get(keys[0]), (int, float))]
    if not numeric:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    numeric.sort(key=lambda r: r[keys[0]])
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for column in columns:
        points = [(r[keys[0]], 100 * r[column]) for r in numeric if isinstance(r.get(column), float)]
        if points:
            axes.plot(*zip(*points), marker="o", label=column)
    axes.set_xlabel(keys[0])
    axes.set_ylabel("mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    atomic_write_with(path, lambda buf: figure.savefig(buf, format="png"))
    plt.close(figure)
    return True


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    folder = Path(cfg.summary.runs or cfg.run.root)
    keys, rows = gather(folder, cfg.summary.key or None)
    columns = [c for c in dict.fromkeys(k for r in rows for k in r) if c != "run" and c not in keys]
    header = ["run", *keys, *columns]

    def cell(value: Any) -> Any:
        return f"{100 * value:.2f}" if isinstance(value, float) and value <= 1.0 else ("-" if value is None else value)

    table = markdown_table(header, [[cell(r.get(h)) if h in columns else r.get(h, "-") for h in header] for r in rows])
    text = f"# Summary of {len(rows)} runs under `{folder}`\n\nswept: {', '.join(keys) or '(nothing differs)'}; mIoU in %\n\n{table}"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, extrasaction="ignore")
    writer.writeheader()
    writer.writerows(rows)
    write_text(folder / "summary.csv", buffer.getvalue())
    if plot(keys, rows, columns, folder / "summary.png"):
        text += "\n![mIoU against the swept value](summary.png)\n"
    write_text(folder / "summary.md", text)
    print("\n" + text)
    return {"keys": keys, "rows": rows}

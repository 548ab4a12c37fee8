"""Stage `report`: gather the experiment into `report.md` (printed at the end of `make demo`).

The results table (every `summary.json` entry), the time each stage took (from its DONE file),
the classifier figures, an mIoU-against-threshold plot of every swept evaluation, and links to
the `visualize` page, its CAM overlays and CAM vs ReCAM pictures when that stage has run.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from recam.config import Config
from recam.io import atomic_write_with, markdown_table, read_json, write_text
from recam.plan import PLAN, step_folder, step_label
from recam.rundir import RunDir
from recam.validate import synthetic_consumers

log = logging.getLogger(__name__)


def _fmt(value, scale: float = 1.0, digits: int = 2) -> str:
    return "-" if value is None else f"{scale * value:.{digits}f}"


def stage_timings(rundir: RunDir) -> list[list]:
    """[label, seconds, finished] of every finished plan step (seconds of the run that finished it)."""
    rows = []
    for step, overrides in PLAN:
        done = step_folder(rundir, step, overrides) / "DONE"
        if done.is_file():
            info = read_json(done)
            seconds = info.get("seconds")
            rows.append(
                [step_label(step, overrides), "-" if seconds is None else f"{seconds:.1f}", info.get("finished", "-")]
            )
    return rows


def sweep_curves(rundir: RunDir, summary: dict) -> dict[str, dict[float, float]]:
    """{summary key: {threshold: mIoU}} of every evaluation that swept its threshold."""
    curves = {}
    for key in summary:
        results = rundir.root / key / "results.json"
        if results.is_file() and "sweep" in (data := read_json(results)):
            curves[key] = {float(t): m for t, m in data["sweep"].items()}
    return curves


def plot_curves(curves: dict[str, dict[float, float]], path: Path) -> bool:
    """mIoU (%) against the background threshold, one line per evaluation; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no plot in the report")
        return False
    figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    for key, curve in curves.items():
        thresholds = sorted(curve)
        axes.plot(thresholds, [100 * curve[t] for t in thresholds], label=key)
    axes.set_xlabel("background threshold")
    axes.set_ylabel("mIoU (%)")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    atomic_write_with(path, lambda buf: figure.savefig(buf, format="png"))
    plt.close(figure)
    return True


def regime_targets(summary: dict) -> list[dict]:
    """The regime targets of issue 12 (docs/regime.md) from an experiment's summary entries: one
    {target, value, measured, met} per target whose entries exist (`value`: the number compared, a
    threshold, points or a fraction). Seed and mask figures are the oracle's (best t on the
    evaluation GT) where marked, else at the fixed t."""
    out: list[dict] = []
    cam, recam = summary.get("eval_seeds/cam"), summary.get("eval_seeds/recam")
    seg_pseudo, seg_gt = summary.get("eval_seg/pseudo"), summary.get("eval_seg/gt")
    masks = [e for k, e in summary.items() if k.startswith("eval_masks/") and "miou_fixed" in e]
    seeds = [e for e in (cam, recam) if e is not None]

    def add(key: str, target: str, value: float, measured: str, met: bool) -> None:
        out.append({"key": key, "target": target, "value": round(value, 6), "measured": measured, "met": bool(met)})

    if cam is not None:
        t = cam["threshold"]
        add("cam_best_t", "CAM seeds' best t in [0.10, 0.35]", t, f"t = {t:.2f}", 0.10 <= t <= 0.35)
    if cam is not None and recam is not None:
        best = 100 * (recam["miou"] - cam["miou"])
        fixed = 100 * (recam["miou_fixed"] - cam["miou_fixed"])
        add(
            "gain_best_t",
            "ReCAM - CAM seeds at their best t >= 2 points (oracle t)",
            best,
            f"{best:+.2f} points",
            best >= 2,
        )
        add(
            "gain_fixed_t",
            "ReCAM - CAM seeds at their fixed t >= 2 points",
            fixed,
            f"{fixed:+.2f} points (t {recam['threshold_fixed']:.2f} / {cam['threshold_fixed']:.2f})",
            fixed >= 2,
        )
    if masks and seeds:
        mask, seed = max(e["miou_fixed"] for e in masks), max(e["miou"] for e in seeds)
        add(
            "masks_minus_seeds",
            "masks above seeds (best mask at its set t vs best seeds at the oracle t)",
            100 * (mask - seed),
            f"{100 * mask:.2f} vs {100 * seed:.2f}",
            mask > seed,
        )
    if seg_pseudo is not None and seg_gt is not None and seg_gt["miou"] > 0:
        ratio = seg_pseudo["miou"] / seg_gt["miou"]
        add(
            "seg_pseudo_over_gt",
            "DeepLab on pseudo masks >= 70 % of the GT upper bound",
            ratio,
            f"{100 * ratio:.1f} %",
            ratio >= 0.70,
        )
    return out


def regime_checks(summary: dict) -> list[list[str]]:
    """[target, measured, met] rows of `regime_targets` for the report's table."""
    return [[r["target"], r["measured"], "yes" if r["met"] else "no"] for r in regime_targets(summary)]


def regime_entry(summary: dict) -> dict | None:
    """summary.json's `report/regime` entry: every target's value and verdict, and how many are met."""
    targets = regime_targets(summary)
    if not targets:
        return None
    return {
        "targets_met": sum(r["met"] for r in targets),
        "targets": len(targets),
        **{r["key"]: r["value"] for r in targets},
        "met": {r["key"]: r["met"] for r in targets},
    }


def write_report(cfg: Config, rundir: RunDir) -> str:
    """Write `<experiment>/report.md` and print it."""
    lines = [
        f"# Experiment `{cfg.run.name}`",
        "",
        f"dataset `{cfg.dataset.name}` ({cfg.dataset.root}), model `{cfg.model.arch}` "
        f"(pretrained: {cfg.model.pretrained})",
        "",
    ]
    uses_pretrain = "pretrain" in cfg.run.inputs and synthetic_consumers(cfg)
    pretrained = rundir.stage_dir("pretrain") / "results.json" if uses_pretrain else None
    if pretrained is not None and pretrained.is_file():
        r = read_json(pretrained)
        lines.append(
            f"- `pretrain` ({rundir.stage_dir('pretrain')}): {r['num_classes']} classes, val top-1 "
            f"{100 * r['val_top1']:.2f} %, {r['seconds']:.0f} s"
        )
    for stage in ("cam", "recam"):
        results = rundir.stage_dir(stage) / "results.json"
        if results.is_file():
            r = read_json(results)
            lines.append(
                f"- `{stage}`: val mAP {r['val_map']:.4f}, val loss {r['val_loss']:.4f}, "
                f"{r['images_per_s']:.1f} images/s (last epoch)"
            )
    summary = rundir.rebuild_summary()  # a missing or damaged summary.json comes back from the stage folders
    if summary:
        rows = [
            [
                key,
                _fmt(e["miou"], 100),
                _fmt(e.get("threshold")),
                _fmt(e.get("miou_fixed"), 100),
                _fmt(e.get("threshold_fixed")),
                _fmt(e.get("miou_crf"), 100),
                e.get("split", "-"),
            ]
            for key, e in summary.items()
            if "miou" in e
        ]
        loc = [
            [
                key,
                _fmt(e["gt_known_loc"], 100),
                _fmt(e.get("threshold")),
                _fmt(e.get("top1_loc"), 100),
                _fmt(e.get("maxboxacc_v2"), 100),
                e.get("split", "-"),
            ]
            for key, e in summary.items()
            if key.startswith("eval_loc/")
        ]
        if loc:  # box localization (eval_loc): no mIoU, its own table
            lines += [
                "",
                "## Localization",
                "",
                markdown_table(
                    ["artifact", "GT-known loc %", "best tau", "top-1 loc %", "MaxBoxAccV2 %", "split"], loc
                ),
            ]
        lines += [
            "",
            "## Results",
            "",
            markdown_table(
                ["artifact", "mIoU %", "best t", "mIoU % (fixed t)", "fixed t", "mIoU % with CRF", "split"], rows
            ),
            "Seeds and masks: mIoU at the best background threshold t, tuned on the evaluation ground truth "
            "(optimistic), and at the fixed t (the headline). Segmentation (`eval_seg/*`): val mIoU of DeepLab "
            "trained on the pseudo masks or on the ground truth (upper bound), without and with dense CRF.",
        ]
        if (regime_figures := regime_entry(summary)) is not None:
            summary = rundir.rebuild_summary({"report/regime": regime_figures})  # the figures, for scripts
        if regime := regime_checks(summary):
            lines += [
                "",
                "## Regime (the targets of issue 12, docs/regime.md)",
                "",
                markdown_table(["target", "measured", "met"], regime),
            ]
        auto_rows = [
            [
                key,
                e["selector"],
                _fmt(e["threshold_auto"]),
                _fmt(e.get("selector_score"), 1, 3),
                _fmt(e["miou_auto"], 100),
                _fmt(e["threshold"]) if e.get("gap") is not None else "-",
                _fmt(e["miou"], 100) if e.get("gap") is not None else "-",
                _fmt(e.get("gap"), 100),
            ]
            for key, e in summary.items()
            if e.get("threshold_auto") is not None
        ]
        if auto_rows:
            lines += [
                "",
                "## Thresholds chosen without ground truth (`auto`)",
                "",
                markdown_table(
                    [
                        "artifact",
                        "selector",
                        "auto t",
                        "score",
                        "mIoU % at auto t",
                        "oracle t",
                        "oracle mIoU %",
                        "gap (points)",
                    ],
                    auto_rows,
                ),
                "The auto t is chosen from images, image-level labels and the score maps of a sample "
                "(docs/thresholds.md); the oracle, the best t of the ground-truth sweep, is shown only to "
                "measure the gap (none for masks/crf, which are made at one threshold).",
            ]

    curves = sweep_curves(rundir, summary)
    if curves and plot_curves(curves, rundir.root / "report_miou.png"):
        lines += ["", "![mIoU against the background threshold](report_miou.png)"]
    timings = stage_timings(rundir)
    if timings:
        total = sum(float(t[1]) for t in timings if t[1] != "-")
        lines += [
            "",
            "## Time per stage",
            "",
            markdown_table(["stage", "seconds", "finished"], timings),
            f"Total {total:.0f} s ({total / 60:.1f} min) for the stages listed.",
        ]
    viz = rundir.root / "visualize" / "index.html"
    if viz.is_file():
        lines += [
            "",
            "## Pictures",
            "",
            f"CAM overlays, CAM vs ReCAM, features, masks: [visualize/index.html]({viz.relative_to(rundir.root)})",
        ]
        for picture in sorted(viz.parent.rglob("*overlay*.png"))[:4] + sorted(viz.parent.rglob("cam_vs_recam.png"))[:2]:
            lines.append(f"![{picture.stem}]({picture.relative_to(rundir.root)})")
    text = "\n".join(lines) + "\n"
    write_text(rundir.root / "report.md", text)
    print("\n" + text)
    return text


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    return {"report": write_report(cfg, rundir)}

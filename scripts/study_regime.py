"""The regime study of issue 12 (docs/regime.md): CAM against ReCAM seeds over settings x seeds.

Each setting is a list of overrides on top of `experiment=demo`; each (setting, seed) runs the
steps prepare, [pretrain], cam, seeds/cam, eval_seeds/cam, recam, seeds/recam, eval_seeds/recam
in its own run folder `outputs/regime/<setting>-s<seed>` (runtime.seed = seed: the classifier's
initialisation of its head, the batch order and augmentation; the pretrained backbone is shared,
as ImageNet weights are). Finished runs are skipped (the pipeline's own up-to-date check), so an
interrupted study resumes. Writes <out>/regime.json (every run) and <out>/regime.md (mean +- std
over the seeds per setting).

    python scripts/study_regime.py --settings base none lambda0.5 lambda2 scales3 --seeds 0 1 2

ReCAM is trained with lambda 1 and read out with W (.) V (the VOC reference) unless a setting says
otherwise (`lambda*`; `w_only`, `w_lambda*`, `*_w`: W alone, the demo's read-out).

Settings marked as sharing reuse the run of the same seed of their parent (`base`, or the one in
SHARES_FROM): its classifier, its models, or its models and CAM seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
STEPS = {
    None: "[prepare,pretrain,cam,seeds/cam,eval_seeds/cam,recam,seeds/recam,eval_seeds/recam]",
    "cam": "[recam,seeds/recam,eval_seeds/recam]",  # a recam.* change: the base run's classifier
    "models": "[seeds/cam,eval_seeds/cam,seeds/recam,eval_seeds/recam]",  # a seeds.* change: its models
    "cam_seeds": "[seeds/recam,eval_seeds/recam]",  # a change of the ReCAM read-out only: also base's CAM seeds
}
# The study exports seeds of the evaluated split only (train, 320 images; the demo exports train_aug).
COMMON = ["experiment=demo", "seeds.split=train"]


def _resolution(r: float) -> list[str]:
    """Overrides that run cam, recam and the seeds at r x the demo's resolution (crop 128, resize_long
    [112, 160], seed scales 1.0 / 0.5 / 1.5 / 2.0): the feature maps grow by r in each direction."""
    crop, low, high = round(128 * r), round(112 * r), round(160 * r)
    scales = ",".join(f"{s * r:g}" for s in (1.0, 0.5, 1.5, 2.0))
    return [
        *(f"{stage}.crop_size={crop}" for stage in ("cam", "recam")),
        *(f"{stage}.resize_long=[{low},{high}]" for stage in ("cam", "recam")),
        f"seeds.scales=[{scales}]",
    ]


# The study's reference point is the paper's VOC ReCAM: W (.) V read-out and lambda 1. The demo now
# departs from both (W alone, lambda 0.25: configs/experiment/demo.yaml, chosen from this study), so
# every setting that does not name one of these keys gets the VOC value, as the study always had.
WALONE = "seeds.use_fused_weight=false"
STUDY_DEFAULTS = {"seeds.use_fused_weight": "true", "recam.loss_weight": "1.0"}


def with_study_defaults(overrides: list[str]) -> list[str]:
    """`overrides` with the VOC reference's read-out and lambda for the keys they do not set."""
    named = {o.split("=", 1)[0] for o in overrides}
    return [*(f"{k}={v}" for k, v in STUDY_DEFAULTS.items() if k not in named), *overrides]


# name: (overrides on experiment=demo, what it shares with the `base` run of the same seed)
SETTINGS: dict[str, tuple[list[str], str | None]] = {
    "base": (
        [],
        None,
    ),  # the demo with the VOC ReCAM (W (.) V, lambda 1): synthetic pretraining, fixed BN, OS 16, crop 128
    # from scratch: the earlier demo's recipe (trainable BN, momentum 0.9, lr 0.01, 9 epochs, recam lr 0.015)
    "none": (
        [
            "model.pretrained=none",
            "model.fixed_bn=false",
            "cam.lr=0.01",
            "cam.momentum=0.9",
            "cam.epochs=9",
            "recam.lr=0.015",
        ],
        None,
    ),
    "os8": (["model.output_stride=8"], None),
    # the crop axis: the whole chain at r x the demo's resolution (crop 128 r, resize_long [112, 160] r,
    # the 4 seed scales r), r = 0.75 / 1.5 / 2: the images are scaled, not a bigger window on the same pixels
    **{name: (_resolution(r), None) for name, r in (("crop96", 0.75), ("crop192", 1.5), ("crop256", 2.0))},
    "recam12": (["recam.epochs=12"], "cam"),  # 3x the ReCAM steps (300): is V, trained from random, undertrained?
    "recam12_w": (["recam.epochs=12", WALONE], "cam"),  # both: 300 steps, W alone
    "lambda0.5": (["recam.loss_weight=0.5"], "cam"),
    "lambda2": (["recam.loss_weight=2.0"], "cam"),
    "scales3": (["seeds.scales=[1.0,0.5,1.5]"], "models"),  # the earlier demo's seed scales (no 2.0)
    "scale2": (["seeds.scales=[2.0]"], "models"),  # the 2.0 scale alone: twice the CAM resolution
    "w_only": ([WALONE], "cam_seeds"),  # ReCAM's backbone with W alone (the COCO variant)
    # the backbone's own seed: base on a backbone pretrained from pretrain.seed 1 / 2 (its own cache file)
    "pretrain1": (["pretrain.seed=1"], None),
    "pretrain2": (["pretrain.seed=2"], None),
}

# the demo's own read-out (W alone, since this study) with the lambdas of `make sweep-lambda`
SETTINGS.update({f"w_lambda{w}": ([f"recam.loss_weight={w}", WALONE], "cam") for w in ("0.1", "0.25", "0.5", "2.0")})

# settings that share with another setting's run than `base` (its overrides are repeated in theirs)
SHARES_FROM = {"crop256_w": "crop256"}
SETTINGS["crop256_w"] = ([*SETTINGS["crop256"][0], WALONE], "cam_seeds")


def run_one(name: str, extra: list[str], seed: int, root: str, base_rows: dict[int, dict]) -> dict:
    overrides, share = SETTINGS[name]
    parent = SHARES_FROM.get(name, "base")
    overrides = with_study_defaults([*overrides, *extra])
    run_name = f"{name}-s{seed}"
    base = f"{root}/{parent}-s{seed}"
    shared = []
    if share is not None:
        if seed not in base_rows:
            raise SystemExit(f"study_regime: setting {name} reuses {parent}-s{seed}: run --settings {parent} first")
        shared = [f"+run.inputs.prepare={base}/prepare", f"+run.inputs.cam={base}/cam"]
        if share in ("models", "cam_seeds"):
            shared.append(f"+run.inputs.recam={base}/recam")
    command = [
        sys.executable, "-m", "recam.train", *COMMON, *overrides, "stage=all", f"stage.steps={STEPS[share]}",
        f"run.root={root}", f"run.name={run_name}", f"runtime.seed={seed}", *shared,
        f"hydra.run.dir={root}/{run_name}/logs/study",
    ]  # fmt: skip
    started = time.time()
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    summary = json.loads((REPO / root / run_name / "summary.json").read_text())
    row = {"setting": name, "seed": seed, "overrides": overrides, "seconds": round(time.time() - started, 1)}
    for method in ("cam", "recam"):
        if share in ("cam", "cam_seeds") and method == "cam":
            row[method] = base_rows[seed]["cam"]  # the same classifier and seeds as its parent run
            continue
        entry = summary[f"eval_seeds/{method}"]
        row[method] = {
            k: entry[k] for k in ("miou", "threshold", "miou_fixed", "threshold_fixed", "miou_0.15", "miou_0.21")
        }
    return row


def _stat(values: list[float], percent: bool = True) -> str:
    """mean ± sample std (0 for one seed), in points when `percent` (mIoU fractions), else as is (t)."""
    scale = 100 if percent else 1
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{scale * mean:.2f} ± {scale * std:.2f}"


def table(rows: list[dict]) -> str:
    lines = [
        "| setting | seeds | CAM best t | CAM mIoU (best t) | ReCAM best t | ReCAM mIoU (best t) | gain (best t) "
        "| CAM mIoU (t 0.15) | ReCAM mIoU (t 0.21) | gain (fixed t) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == name]
        get = lambda m, k, group=group: [r[m][k] for r in group]  # noqa: E731
        gain_best = [r["recam"]["miou"] - r["cam"]["miou"] for r in group]
        gain_fixed = [r["recam"]["miou_fixed"] - r["cam"]["miou_fixed"] for r in group]
        lines.append(
            f"| {name} | {len(group)} | {_stat(get('cam', 'threshold'), False)} "
            f"| {_stat(get('cam', 'miou'))} | {_stat(get('recam', 'threshold'), False)} | {_stat(get('recam', 'miou'))} "
            f"| {_stat(gain_best)} | {_stat(get('cam', 'miou_fixed'))} | {_stat(get('recam', 'miou_fixed'))} "
            f"| {_stat(gain_fixed)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--settings", nargs="+", default=["base", "none"], choices=sorted(SETTINGS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--root", default="outputs/regime")
    parser.add_argument("--out", default="bench/regime")
    parser.add_argument("--extra", nargs="*", default=[], help="overrides added to every run")
    args = parser.parse_args()
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    previous = json.loads((out / "regime.json").read_text())["runs"] if (out / "regime.json").is_file() else []
    rows = [r for r in previous if r["setting"] not in args.settings or r["seed"] not in args.seeds]
    for name in args.settings:
        for seed in args.seeds:
            base_rows = {r["seed"]: r for r in rows if r["setting"] == SHARES_FROM.get(name, "base")}
            row = run_one(name, args.extra, seed, args.root, base_rows)
            rows.append(row)
            print(
                f"{name} seed {seed}: CAM {100 * row['cam']['miou']:.2f} (t {row['cam']['threshold']:.2f}), "
                f"ReCAM {100 * row['recam']['miou']:.2f} (t {row['recam']['threshold']:.2f}); fixed "
                f"{100 * row['cam']['miou_fixed']:.2f} / {100 * row['recam']['miou_fixed']:.2f}; {row['seconds']} s",
                flush=True,
            )
            (out / "regime.json").write_text(json.dumps({"runs": rows}, indent=1))
            (out / "regime.md").write_text(table(rows))
    print(table(rows))


if __name__ == "__main__":
    main()

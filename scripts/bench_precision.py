"""What bf16 autocast changes: seeds exported in float32 and under CPU (or CUDA) bf16 autocast from
the same trained classifiers, compared map by map (max abs diff of `cam` and `high_res`) and by
seed mIoU (eval_seeds), for `cam` and `recam` seeds. Also the classifier's mAP when it is *trained*
under autocast (--train-amp). Writes bench/precision.json.

    python scripts/bench_precision.py --root /tmp/prec           # demo classifiers, 5 + 2 epochs
    python scripts/bench_precision.py --root /tmp/prec --train-amp

Stages already finished with the same config are skipped (the run directory's contract), so a
second call only adds what is missing.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from recam.io import load_npz  # noqa: E402


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recam.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_object(hydra_compose("config", overrides=overrides))


def run(overrides: list[str]) -> dict:
    from recam.pipeline import run_stage

    return run_stage(compose(overrides))


def compare(a: Path, b: Path) -> dict:
    """Max / mean abs difference of every map of two seed folders (same file names)."""
    worst = {"cam": 0.0, "high_res": 0.0}
    means = {"cam": [], "high_res": []}
    names = sorted(p.name for p in a.glob("*.npz"))
    for name in names:
        x, y = load_npz(a / name), load_npz(b / name)
        for key in worst:
            diff = np.abs(x[key].astype(np.float32) - y[key].astype(np.float32))
            if diff.size:
                worst[key] = max(worst[key], float(diff.max()))
                means[key].append(float(diff.mean()))
    return {
        "images": len(names),
        **{f"max_abs_diff_{k}": v for k, v in worst.items()},
        **{f"mean_abs_diff_{k}": float(np.mean(v)) if v else 0.0 for k, v in means.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default="bench/precision_work")
    parser.add_argument("--cam-epochs", type=int, default=5)
    parser.add_argument("--recam-epochs", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--train-amp", action="store_true", help="also train cam under autocast and score it")
    parser.add_argument("--out", default="bench/precision.json")
    args = parser.parse_args()
    root = Path(args.root)
    common = [
        "experiment=demo",
        f"run.root={root / 'outputs'}",
        f"dataset.root={root / 'data' / 'synthetic' / 'VOC2012'}",
        f"cam.epochs={args.cam_epochs}",
        f"recam.epochs={args.recam_epochs}",
        f"runtime.device={args.device}",
    ]
    fp32 = root / "outputs" / "fp32"
    shared = [f"+run.inputs.{s}={fp32 / s}" for s in ("prepare", "cam", "recam")]
    for stage in ("prepare", "pretrain", "cam", "recam"):
        run([*common, "run.name=fp32", f"stage={stage}"])
    report: dict = {"device": args.device, "cam_epochs": args.cam_epochs, "recam_epochs": args.recam_epochs}
    for method in ("cam", "recam"):
        seeds = ["stage=seeds", f"seeds.method={method}", "seeds.split=train", "seeds.high_res_dtype=float32"]
        run([*common, "run.name=fp32", *seeds, "seeds.amp=false"])
        ref = run([*common, "run.name=fp32", "stage=eval_seeds", f"eval_seeds.method={method}"])
        run([*common, "run.name=bf16", *shared, *seeds, "seeds.amp=true"])
        half = run(
            [
                *common,
                "run.name=bf16",
                f"+run.inputs.prepare={fp32 / 'prepare'}",
                "stage=eval_seeds",
                f"eval_seeds.method={method}",
            ]
        )
        report[f"seeds/{method}"] = {
            **compare(fp32 / "seeds" / method, root / "outputs" / "bf16" / "seeds" / method),
            "miou_fp32": ref["miou"],
            "miou_bf16": half["miou"],
            "miou_diff": half["miou"] - ref["miou"],
            "threshold_fp32": ref["threshold"],
            "threshold_bf16": half["threshold"],
            "miou_fixed_fp32": ref["miou_fixed"],
            "miou_fixed_bf16": half["miou_fixed"],
        }
    if args.train_amp:
        trained = run(
            [*common, "run.name=bf16_train", f"+run.inputs.prepare={fp32 / 'prepare'}", "stage=cam", "cam.amp=true"]
        )
        reference = run([*common, "run.name=fp32", "stage=cam"])
        report["cam_training"] = {
            "val_map_fp32": reference["val_map"],
            "val_map_bf16": trained["val_map"],
            "images_per_s_fp32": reference["images_per_s"],
            "images_per_s_bf16": trained["images_per_s"],
        }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2, default=float))
    print(json.dumps(report, indent=2, default=float))


if __name__ == "__main__":
    main()

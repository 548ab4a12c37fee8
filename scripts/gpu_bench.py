"""The prepared GPU benchmark: every stage of the pipeline on a VOC-sized synthetic set, through the
real stage code (`run_stage`), with images/s, peak GPU memory, GPU utilisation and the projected time
of each stage at VOC's sizes and the paper's epochs / iterations. Writes gpu_bench.json + gpu_bench.md.

    python scripts/gpu_bench.py --out bench/gpu            # one GPU, sized to finish in < 8 min on an H200
    python scripts/gpu_bench.py --out bench/gpu --fast     # the same under runtime=fast (bf16, TF32, NHWC)
    python scripts/gpu_bench.py --tiny --out /tmp/gb       # CPU smoke run in seconds (a test runs it)

Default size: 224 train + 32 extra (train_aug 256) + 32 val synthetic images with sides of 375-500
pixels (70 % of them 440x500 / 500x440, so buckets of equal size exist), ResNet-50 `cam` and `recam`
at batch 16 crop 512 for `--train-steps` steps each, `seeds` 4 scales + flip on train_aug, then the
seed export again on val with AMP off/on x bucketed/one at a time, `ir_labels` over all cores, `irn`
(batch 32, crop 512), `masks` (the random walk on the GPU), DeepLab-v2 ResNet-101 `seg` for
`--seg-iterations` updates of 2 x 5 crops of 321, `eval_seg` (with dense CRF) on val.
No file is downloaded: every network starts from random weights (ImageNet weights change no speed),
with trainable BN and lr 0.01 in the classifiers so that random weights cannot overflow the loss.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing it

import torch  # noqa: E402

log = logging.getLogger("gpu_bench")

# VOC 2012 sizes and the paper's schedule (spec §2.6, §3.4, §6b, §7.1): what the projection scales to.
VOC_TRAIN_AUG, VOC_TRAIN, VOC_VAL = 10582, 1464, 1449
PAPER = {"cam_epochs": 5, "recam_epochs": 4, "irn_epochs": 3, "seg_iterations": 20000}


class GpuSampler:
    """GPU utilisation (%) and used memory sampled by `nvidia-smi -lms`, in a background thread;
    `window(t0, t1)` averages the samples taken between two time stamps. Empty where nvidia-smi is
    missing (CPU machines, some containers)."""

    def __init__(self, interval_ms: int = 200) -> None:
        self.samples: list[tuple[float, float, float]] = []
        self.proc = None
        if shutil.which("nvidia-smi") is None or not torch.cuda.is_available():
            return
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        self.proc = subprocess.Popen(
            [
                "nvidia-smi",
                f"--id={index}",
                "--query-gpu=utilization.gpu,memory.used",
                "--format=csv,noheader,nounits",
                f"-lms={interval_ms}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 2 and all(p.replace(".", "").isdigit() for p in parts):
                self.samples.append((time.time(), float(parts[0]), float(parts[1])))

    def window(self, start: float, end: float) -> dict:
        inside = [s for s in self.samples if start <= s[0] <= end]
        if not inside:
            return {"gpu_util_mean": None, "gpu_util_max": None}
        return {
            "gpu_util_mean": round(sum(s[1] for s in inside) / len(inside), 1),
            "gpu_util_max": max(s[1] for s in inside),
            "gpu_mem_used_max_mb": max(s[2] for s in inside),
        }

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def overrides_for(args: argparse.Namespace, root: Path) -> list[str]:
    """The Hydra overrides shared by every stage call of the benchmark."""
    common = [
        f"run.root={root / 'outputs'}",
        "run.name=bench",
        f"dataset.root={root / 'data' / 'VOC2012'}",
        "dataset=synthetic",
        "model.pretrained=none",
        "model.fixed_bn=false",
        "eval_seeds.split=train",
        "eval_masks.split=train",
        "seg.labels=pseudo",
        "eval_seg.labels=pseudo",
    ]
    if args.tiny:
        return [
            *common,
            "debug=tiny",
            "runtime.device=cpu",
            "dataset.synthetic.n_train=8",
            "dataset.synthetic.n_val=4",
            "dataset.synthetic.n_extra=2",
            "seeds.bucket_size=4",
            "eval_seg.crf=true",
            "seg.iterations=2",
            "seg.checkpoint_every=2",
        ]
    workers = min(8, os.cpu_count() or 1)
    return [
        *common,
        "runtime.device=cuda" if torch.cuda.is_available() else "runtime.device=cpu",
        f"runtime.num_workers={workers}",
        *(["runtime=fast"] if args.fast else []),
        f"dataset.synthetic.n_train={args.images - 32}",
        "dataset.synthetic.n_extra=32",
        f"dataset.synthetic.n_val={args.val_images}",
        "dataset.synthetic.min_size=375",
        "dataset.synthetic.max_size=500",
        "model.arch=resnet50",
        *[
            f"{s}.{k}={v}"
            for s in ("cam", "recam")
            for k, v in (
                ("batch_size", 16),
                ("crop_size", 512),
                ("epochs", 1),
                ("max_steps", args.train_steps),
                ("val_batches", 1),
                ("lr", 0.01 if s == "cam" else 5e-4),
                ("momentum", 0.9),
            )
        ],
        "seeds.scales=[1.0,0.5,1.5,2.0]",
        "seeds.flip=true",
        "seeds.bucket_size=8",
        f"ir_labels.num_workers={os.cpu_count() or 1}",
        "irn.batch_size=32",
        "irn.crop_size=512",
        "irn.epochs=1",
        f"irn.max_steps={args.irn_steps}",
        "irn.pretrained=cam",
        "irn.val_batches=1",
        "irn.mean_shift_batches=2",
        f"masks.num_workers={os.cpu_count() or 1}",
        "seg.arch=deeplabv2_resnet101",
        "seg.pretrained=none",
        "seg.fixed_bn=false",
        f"seg.iterations={args.seg_iterations}",
        f"seg.checkpoint_every={args.seg_iterations}",
        "seg.batch_size=5",
        "seg.iter_size=2",
        "seg.crop_size=321",
        "eval_seg.crf=true",
    ]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from recam.config import register_configs

    register_configs()
    with initialize_config_dir(config_dir=str(REPO / "configs"), version_base="1.3"):
        return OmegaConf.to_object(hydra_compose("config", overrides=overrides))


def count_ids(root: Path, split: str) -> int:
    path = root / "outputs" / "bench" / "prepare" / f"{split}.txt"
    return len(path.read_text().split()) if path.is_file() else 0


def measure(name: str, overrides: list[str], sampler: GpuSampler) -> dict:
    """One stage call: wall seconds, peak GPU memory, GPU utilisation, and its results (or its error)."""
    from recam.pipeline import run_stage

    cfg = compose(overrides)
    cuda = torch.cuda.is_available() and cfg.runtime.device != "cpu"
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    log.info("== %s ==", name)
    started = time.time()
    record: dict = {"stage": name}
    try:
        results = run_stage(cfg)
        record["ok"] = True
    except Exception as err:  # a benchmark reports the stages that ran; the error is kept, not hidden
        results = {}
        record.update(ok=False, error=f"{type(err).__name__}: {err}"[:500])
        log.error("%s failed: %s", name, record["error"])
    if cuda:
        torch.cuda.synchronize()
    ended = time.time()
    record["seconds"] = round(ended - started, 2)
    record["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1) if cuda else None
    record.update(sampler.window(started, ended))
    record["results"] = (
        {k: v for k, v in results.items() if k not in ("history", "iou", "iou_crf", "sweep")}
        if isinstance(results, dict)
        else {}
    )
    if isinstance(results, dict) and "history" in results and results["history"]:
        record["loop_images_per_s"] = results["history"][-1].get("images_per_s")
    if isinstance(results, dict) and "images_per_s" in results and "loop_images_per_s" not in record:
        record["loop_images_per_s"] = results["images_per_s"]
    return record


def project(records: dict[str, dict], units: dict[str, int], voc: dict[str, float]) -> None:
    """Add images/s (units processed / seconds, or the training loop's own rate) and the projected
    seconds of each stage at VOC's size to every record, in place."""
    for name, record in records.items():
        if not record.get("ok") or name not in units:
            continue
        rate = record.get("loop_images_per_s") or units[name] / max(record["seconds"], 1e-9)
        record["images_per_s"] = round(float(rate), 3)
        if name == "seg":
            record["iterations_per_s"] = round(
                float(record["results"].get("iterations", units[name]))
                / max(float(record["results"].get("seconds", record["seconds"])), 1e-9),
                3,
            )
            record["projected_s_at_voc"] = round(voc[name] / record["iterations_per_s"], 1)
        elif name in voc:
            record["projected_s_at_voc"] = round(voc[name] / rate, 1)


def markdown(report: dict) -> str:
    lines = [
        f"# GPU benchmark: {report['device']}",
        "",
        f"torch {report['torch']}, {report['preset']} preset, {report['images']} train_aug / "
        f"{report['val_images']} val images of {report['sizes']}, total {report['total_seconds']:.0f} s "
        f"(projection at VOC: {report['projected_total_s'] / 3600:.2f} h).",
        "",
        "| stage | seconds | images/s | it/s | peak GPU MB | GPU util % (mean / max) | projected at VOC | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["stages"].items():
        util = "-" if r.get("gpu_util_mean") is None else f"{r['gpu_util_mean']} / {r['gpu_util_max']}"
        projected = r.get("projected_s_at_voc")
        lines.append(
            f"| {name} | {r['seconds']} | {r.get('images_per_s', '-')} | {r.get('iterations_per_s', '-')} | "
            f"{r['peak_gpu_mb'] if r['peak_gpu_mb'] is not None else '-'} | {util} | "
            f"{'-' if projected is None else f'{projected / 60:.1f} min'} | "
            f"{'' if r.get('ok') else 'FAILED: ' + r.get('error', '')[:120]} |"
        )
    lines += [
        "",
        "Projection: VOC train_aug 10,582 images (cam x5, recam x4, irn x3 epochs; seeds, ir_labels, "
        "masks once), train 1,464 (eval_seeds, eval_masks), val 1,449 (eval_seg), seg 20,000 updates.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench/gpu")
    parser.add_argument("--work", default=None, help="data + outputs folder (default: <out>/work, removed at the end)")
    parser.add_argument("--tiny", action="store_true", help="CPU, a dozen 48-64 px images, 2 steps: a smoke run")
    parser.add_argument("--fast", action="store_true", help="runtime=fast (bf16 autocast, TF32, channels_last)")
    parser.add_argument("--images", type=int, default=256, help="train_aug images (train + 32 extra)")
    parser.add_argument("--val-images", type=int, default=32)
    parser.add_argument("--train-steps", type=int, default=20, help="cam / recam optimizer steps (batch 16)")
    parser.add_argument("--irn-steps", type=int, default=8, help="irn optimizer steps (batch 32)")
    parser.add_argument("--seg-iterations", type=int, default=300)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="[%(asctime)s][%(name)s] %(message)s")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = Path(args.work) if args.work else out / "work"
    if root.exists() and not args.keep:
        shutil.rmtree(root)
    base = overrides_for(args, root)
    sampler = GpuSampler()
    started = time.time()
    records: dict[str, dict] = {}
    plan = [
        ("prepare", ["stage=prepare"]),
        ("cam", ["stage=cam"]),
        ("recam", ["stage=recam"]),
        ("seeds", ["stage=seeds", "seeds.method=recam"]),
        ("eval_seeds", ["stage=eval_seeds", "eval_seeds.method=recam"]),
    ]
    for name, extra in plan:
        records[name] = measure(name, [*base, *extra], sampler)
    # The seed export again on val: AMP off/on x size-bucketed / one image at a time, each in its own run.
    bench = root / "outputs" / "bench"
    inputs = [f"+run.inputs.{s}={bench / s}" for s in ("prepare", "cam", "recam")]
    # and once more with every scale made on the GPU from one uint8 copy (seeds.resize_on_device)
    for amp, bucket, on_device in [(False, 8, False), (False, 1, False), (True, 8, False), (True, 1, False),
                                   (False, 8, True)]:  # fmt: skip
        name = f"seeds_val_amp{'on' if amp else 'off'}_bucket{bucket}" + ("_resize_on_device" if on_device else "")
        records[name] = measure(
            name,
            [
                *base,
                *inputs,
                f"run.name={name}",
                "stage=seeds",
                "seeds.method=recam",
                "seeds.split=val",
                f"seeds.amp={str(amp).lower()}",
                f"seeds.bucket_size={bucket}",
                f"seeds.resize_on_device={str(on_device).lower()}",
            ],
            sampler,
        )
    for name, extra in [
        ("ir_labels", ["stage=ir_labels"]),
        ("irn", ["stage=irn"]),
        ("masks", ["stage=masks", "masks.method=irn"]),
        ("eval_masks", ["stage=eval_masks", "eval_masks.method=irn"]),
        ("seg", ["stage=seg"]),
        ("eval_seg", ["stage=eval_seg"]),
    ]:
        records[name] = measure(name, [*base, *extra], sampler)
    sampler.close()

    cfg = compose(base)
    train_aug, train, val = count_ids(root, "train_aug"), count_ids(root, "train"), count_ids(root, "val")
    units = {
        "cam": train_aug,
        "recam": train_aug,
        "seeds": train_aug,
        "eval_seeds": train,
        "ir_labels": train_aug,
        "irn": train_aug,
        "masks": train_aug,
        "eval_masks": train,
        "seg": cfg.seg.iterations,
        "eval_seg": val,
        **{name: val for name in records if name.startswith("seeds_val")},
    }
    voc = {
        "cam": VOC_TRAIN_AUG * PAPER["cam_epochs"],
        "recam": VOC_TRAIN_AUG * PAPER["recam_epochs"],
        "seeds": VOC_TRAIN_AUG,
        "eval_seeds": VOC_TRAIN,
        "ir_labels": VOC_TRAIN_AUG,
        "irn": VOC_TRAIN_AUG * PAPER["irn_epochs"],
        "masks": VOC_TRAIN_AUG,
        "eval_masks": VOC_TRAIN,
        "seg": PAPER["seg_iterations"],
        "eval_seg": VOC_VAL,
    }
    project(records, units, voc)
    for name in ("seeds", *[n for n in records if n.startswith("seeds_val")]):  # the export's own loop rate
        seconds = records[name]["results"].get("seconds_per_image")
        if records[name].get("ok") and seconds:
            records[name]["images_per_s"] = round(1.0 / seconds, 3)
            if name == "seeds":
                records[name]["projected_s_at_voc"] = round(VOC_TRAIN_AUG * seconds, 1)
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() and not args.tiny else "cpu"
    report = {
        "device": device,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cpus": os.cpu_count(),
        "preset": "fast" if args.fast else "paper (fp32, TF32 off)",
        "tiny": args.tiny,
        "images": train_aug,
        "val_images": val,
        "sizes": "48-64 px" if args.tiny else "375-500 px",
        "total_seconds": round(time.time() - started, 1),
        "projected_total_s": round(sum(r.get("projected_s_at_voc", 0.0) for r in records.values()), 1),
        "stages": records,
    }
    (out / "gpu_bench.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "gpu_bench.md").write_text(markdown(report))
    print(markdown(report))
    if not args.keep and root.exists():
        shutil.rmtree(root)
    failed = [n for n, r in records.items() if not r.get("ok")]
    if failed:
        print(f"gpu_bench: stages failed: {', '.join(failed)}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()

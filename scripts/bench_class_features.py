"""Time and memory of the ReCAM class features: batched product vs the reference's broadcast form.

    python scripts/bench_class_features.py                    # spec size: B 16, K 20, C 2048, 32x32
    python scripts/bench_class_features.py --batch 4 --repeats 5 --devices cpu

Each (device, variant) runs forward + backward in a fresh subprocess, so its peak memory is its
own: on CPU the peak resident set (`ru_maxrss`, torch's allocations are invisible to
tracemalloc) minus the resident set just before the first call; on CUDA
`torch.cuda.max_memory_allocated` minus the memory allocated before it. Times are medians over
`--repeats` timed runs after one warm-up. Writes bench/class_features.json, prints a table.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from recam.io import markdown_table, write_json
from recam.models.recam_head import class_features, class_features_materialized

VARIANTS = {"bmm": class_features, "materialized": class_features_materialized}
REPO = Path(__file__).resolve().parents[1]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--size", type=int, default=32, help="feature map side (crop 512 / stride 16)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--devices", nargs="+", default=None, help="default: cpu, and cuda if available")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "class_features.json")
    parser.add_argument("--worker", nargs=2, metavar=("DEVICE", "VARIANT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, device_name: str, variant: str) -> dict:
    """Run one variant on one device (in this process) and return its timings and peak memory."""
    device = torch.device(device_name)
    fn = VARIANTS[variant]
    gen = torch.Generator().manual_seed(0)
    shape_hw = (args.size, args.size)
    cams = torch.rand(args.batch, args.classes, *shape_hw, generator=gen).to(device).requires_grad_()
    feats = torch.randn(args.batch, args.channels, *shape_hw, generator=gen).relu().to(device).requires_grad_()
    upstream = torch.randn(args.batch, args.classes, args.channels, generator=gen).to(device)
    # A tiny call first, so loading kernels and math libraries is not counted as this variant's memory.
    tiny = torch.ones(1, 1, 2, 2, device=device, requires_grad=True)
    fn(tiny, tiny).sum().backward()
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        base_bytes = torch.cuda.memory_allocated(device)
    else:
        base_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB

    forward_s, backward_s = [], []
    for run in range(args.repeats + 1):  # run 0 warms up (allocator, kernels) and is not timed
        cams.grad = feats.grad = None
        start = time.perf_counter()
        out = fn(cams, feats)
        sync(device)
        middle = time.perf_counter()
        out.backward(upstream)
        sync(device)
        end = time.perf_counter()
        if run:
            forward_s.append(middle - start)
            backward_s.append(end - middle)
        checks = {
            "out_sum": float(out.detach().double().sum()),
            "grad_cams_sum": float(cams.grad.double().sum()),
            "grad_feats_sum": float(feats.grad.double().sum()),
        }
        del out

    if device.type == "cuda":
        peak_bytes = torch.cuda.max_memory_allocated(device) - base_bytes
    else:
        peak_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base_bytes
    forward_ms = 1000 * statistics.median(forward_s)
    backward_ms = 1000 * statistics.median(backward_s)
    return {
        "device": device_name,
        "variant": variant,
        "forward_ms": forward_ms,
        "backward_ms": backward_ms,
        "total_ms": forward_ms + backward_ms,
        "peak_extra_mib": peak_bytes / 2**20,
        "threads": torch.get_num_threads(),
        **checks,
    }


def run_in_subprocess(args: argparse.Namespace, device: str, variant: str) -> dict:
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--worker",
        device,
        variant,
        "--batch",
        str(args.batch),
        "--classes",
        str(args.classes),
        "--channels",
        str(args.channels),
        "--size",
        str(args.size),
        "--repeats",
        str(args.repeats),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"benchmark worker {device}/{variant} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:
        print(json.dumps(measure(args, *args.worker)))
        return
    devices = args.devices or (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    rows = [run_in_subprocess(args, device, variant) for device in devices for variant in VARIANTS]
    materialised_values = args.batch * args.classes * args.channels * args.size**2
    result = {
        "shape": {
            "batch": args.batch,
            "classes": args.classes,
            "channels": args.channels,
            "height": args.size,
            "width": args.size,
        },
        "materialised_tensor_mib": materialised_values * 4 / 2**20,
        "repeats": args.repeats,
        "torch": torch.__version__,
        "cuda_device": torch.cuda.get_device_name(0) if "cuda" in devices else None,
        "results": rows,
    }
    write_json(args.out, result)
    print(
        markdown_table(
            ["device", "variant", "forward ms", "backward ms", "peak extra MiB", "sum(out)"],
            [
                [
                    r["device"],
                    r["variant"],
                    f"{r['forward_ms']:.1f}",
                    f"{r['backward_ms']:.1f}",
                    f"{r['peak_extra_mib']:.0f}",
                    f"{r['out_sum']:.7g}",
                ]
                for r in rows
            ],
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

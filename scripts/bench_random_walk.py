"""Random walk cost: 2^exp_times sparse (CSR) steps vs the reference's dense T^(2^exp_times) (spec §6c).

Random seeds and boundary map at VOC's stride-4 size (125 x 94 for a 500 x 375 image, K = 2).
Each measurement runs in a fresh subprocess so that its peak resident memory (CPU) is its own;
on CUDA the peak is torch.cuda.max_memory_allocated. Writes bench/random_walk.json.

The dense form at full size needs ~4 GB and 8 products of ~3 TFLOP each; on CPU its powers of T
fill with float32 subnormals, which slow the products further (25 s at N = 3072 on 2 cores), so
by default it is timed at smaller sizes only (`--dense-size`, default 48x36 and 64x48) and the
full size is an N^3 (time) / N^2 (memory) extrapolation, labelled as such in the JSON.
`--full-dense` measures it instead (on CPU expect tens of minutes).

    python scripts/bench_random_walk.py                  # about 2 minutes on 2 CPU cores
    python scripts/bench_random_walk.py --full-dense     # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from recam.masks.random_walk import random_walk, random_walk_dense


def make_inputs(classes: int, height: int, width: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    cams = torch.rand(classes, height, width, generator=gen)
    edge = torch.rand(1, height, width, generator=gen) ** 3
    return cams.to(device), edge.to(device)


def peak_rss_mb() -> float:
    # ru_maxrss is in KiB on Linux.
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(form: str, classes: int, height: int, width: int, device_name: str, repeats: int) -> dict:
    """Best time of `repeats` walks (after a warm-up on a tiny input) and the peak memory above the inputs'.

    The best of several runs, as `timeit` advises: slower runs measure other load on the machine.
    """
    device = torch.device(device_name)
    walk = random_walk if form == "sparse" else random_walk_dense
    walk(*make_inputs(classes, 6, 5, device))  # warm-up: kernels, thread pools
    cams, edge = make_inputs(classes, height, width, device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    rss_before = peak_rss_mb()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = walk(cams, edge)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = peak_rss_mb() - rss_before
    return {
        "form": form,
        "device": device_name,
        "size": [height, width],
        "pixels": height * width,
        "classes": classes,
        "seconds": min(times),
        "repeats": repeats,
        "peak_memory_mb": peak,
        "peak_memory_kind": "cuda max_memory_allocated" if device.type == "cuda" else "rss growth (ru_maxrss)",
        "checksum": float(result.double().sum()),
    }


def run_worker(form: str, classes: int, height: int, width: int, device: str, repeats: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", form, str(classes), str(height), str(width), device, str(repeats)],
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[int, int]:
    height, width = text.lower().split("x")
    return int(height), int(width)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=parse_size, default=(125, 94), help="stride-4 size HxW (default 125x94)")
    parser.add_argument("--classes", type=int, default=2)
    parser.add_argument(
        "--dense-size",
        type=parse_size,
        action="append",
        default=None,
        help="also time the dense form at this HxW (repeatable; default 48x36 and 64x48)",
    )
    parser.add_argument("--full-dense", action="store_true", help="measure the dense form at --size too")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (dense at full size: 1)")
    parser.add_argument("--out", default="bench/random_walk.json")
    parser.add_argument(
        "--worker", nargs=6, metavar=("FORM", "K", "H", "W", "DEVICE", "REPEATS"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()

    if args.worker:
        form, classes, height, width, device, repeats = args.worker
        print(json.dumps(measure(form, int(classes), int(height), int(width), device, int(repeats))))
        return

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    dense_sizes = args.dense_size or [(48, 36), (64, 48)]
    height, width = args.size
    records = []
    for device in devices:
        records.append(run_worker("sparse", args.classes, height, width, device, args.repeats))
        for size in dense_sizes:
            records.append(run_worker("sparse", args.classes, *size, device, args.repeats))
            records.append(run_worker("dense", args.classes, *size, device, args.repeats))
        if args.full_dense:
            records.append(run_worker("dense", args.classes, height, width, device, 1))
        else:
            # Labelled estimate: the 8 squarings dominate and cost N^3; memory grows as N^2.
            largest = max(
                (r for r in records if r["form"] == "dense" and r["device"] == device), key=lambda r: r["pixels"]
            )
            ratio = height * width / largest["pixels"]
            records.append(
                {
                    "form": "dense",
                    "device": device,
                    "size": [height, width],
                    "pixels": height * width,
                    "classes": args.classes,
                    "seconds": largest["seconds"] * ratio**3,
                    "peak_memory_mb": largest["peak_memory_mb"] * ratio**2,
                    "extrapolated_from_size": largest["size"],
                    "note": "EXTRAPOLATED (time x N^3, memory x N^2), not measured",
                }
            )
    for record in records:
        record.pop("checksum", None)
        print(
            f'{record["device"]:5s} {record["form"]:6s} {record["size"][0]:4d}x{record["size"][1]:<4d} '
            f'N={record["pixels"]:6d}  {record["seconds"]:9.3f} s  {record["peak_memory_mb"]:9.1f} MB'
            + ("  (extrapolated)" if "note" in record else "")
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                "radius": 5,
                "beta": 10.0,
                "exp_times": 8,
                "results": records,
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()

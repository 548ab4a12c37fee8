"""`ir_labels` throughput against the worker count (spec §6a: two dense CRFs per image).

Makes `--images` VOC-sized inputs (500 x 375 RGB with smooth random CAMs of 2 classes) in a temp
folder, then labels them through the stage's own worker (`recam.stages.ir_labels.label_image`)
and pool (`recam.engine.pool.map_jobs`) with each worker count, and checks that every count
writes the same bytes. Writes bench/ir_labels.json.

    python scripts/bench_ir_labels.py --workers 0 1 2 --images 24
    python scripts/bench_ir_labels.py --reference --images 6 --rounds 3   # vs a reference-style loop, 2 processes

--reference runs each side as its own Python process, as a user runs the stage: ours is the
stage's pool (`map_jobs`, spawn, worker `recam.stages.crf_workers.label_image`); the reference's
`cam_to_ir_label` spawns N processes with strided shards whose worker module imports torch and
its data loader before the first image, reads with imageio, loads the pickled .npy dict and writes
the PNG with imageio. The CRF itself is the same function on both sides (spec §6a), so the
difference is start-up, imports and I/O. Rounds are interleaved (reference, ours, reference, ...).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from PIL import Image

from recam.engine.pool import map_jobs
from recam.io import save_jpeg, save_npz
from recam.stages.crf_workers import IrLabelJob, label_image


def make_inputs(folder: Path, count: int, height: int, width: int) -> list[tuple[str, str]]:
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for index in range(count):
        image = torch.rand(3, height // 16, width // 16, generator=gen) * 255
        image = F.interpolate(image[None], size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
        cams = F.interpolate(
            torch.rand(1, 2, height // 32, width // 32, generator=gen), size=(height, width), mode="bicubic"
        )[0].clamp(0, 1)
        save_jpeg(folder / f"{index}.jpg", image.clamp(0, 255).byte().numpy())
        save_npz(
            folder / f"{index}.npz",
            keys=np.array([3, 11]),
            high_res=cams.numpy().astype(np.float16),
            cam=cams[:, ::4, ::4].numpy(),
        )
        pairs.append((str(folder / f"{index}.jpg"), str(folder / f"{index}.npz")))
    return pairs


# The reference side: one module per worker process, importing what cam_to_ir_label.py imports
# at its top (torch, torch.multiprocessing, the torch DataLoader) before its first image.
REFERENCE_WORKER = r'''
import sys, os, time
import numpy as np
import torch
from torch import multiprocessing
from torch.utils.data import DataLoader
import imageio.v2 as imageio
from recam.masks.ir_labels import ir_label

def work(process_id, jobs, n_workers):
    for image, seed, out in jobs[process_id::n_workers]:
        img = np.asarray(imageio.imread(image))
        cams = np.load(seed, allow_pickle=True).item()
        label = ir_label(img, cams["high_res"], np.asarray(cams["keys"]), fg_threshold=0.35, bg_threshold=0.10, gt_prob=0.7)
        imageio.imwrite(out, label.astype(np.uint8))

if __name__ == "__main__":
    import json
    jobs, n = json.loads(sys.argv[1]), int(sys.argv[2])
    multiprocessing.spawn(work, nprocs=n, args=(jobs, n), join=True)
'''

OURS = r'''
import sys, json
from recam.engine.pool import map_jobs
from recam.stages.crf_workers import IrLabelJob, label_image
if __name__ == "__main__":
    jobs, n = json.loads(sys.argv[1]), int(sys.argv[2])
    map_jobs(label_image, [IrLabelJob(i, s, o, 0.35, 0.10, 0.7) for i, s, o in jobs], num_workers=n,
             start_method="spawn", desc="ours")
'''


def compare_reference(args: argparse.Namespace) -> None:
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(repo), "OMP_NUM_THREADS": "1"}
    import resource

    seconds: dict[str, list[float]] = {"reference": [], "ours": []}
    cpu: dict[str, list[float]] = {"reference": [], "ours": []}  # CPU seconds of the process and its workers
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_inputs(Path(tmp), args.images, *args.size)
        for _image, seed in pairs:  # the reference's pickled-dict .npy next to our .npz
            z = np.load(seed)
            np.save(
                seed.replace(".npz", ".npy"),
                {
                    "keys": torch.from_numpy(z["keys"]),
                    "cam": torch.from_numpy(z["cam"]),
                    "high_res": z["high_res"].astype(np.float32),
                },
            )
        scripts = {"reference": Path(tmp) / "reference_worker.py", "ours": Path(tmp) / "ours.py"}
        scripts["reference"].write_text(REFERENCE_WORKER)
        scripts["ours"].write_text(OURS)
        outputs = {}
        for round_index in range(args.rounds):
            for name in ("reference", "ours"):
                out = Path(tmp) / f"{name}_{round_index}"
                out.mkdir()
                jobs = [
                    (image, seed.replace(".npz", ".npy") if name == "reference" else seed, str(out / f"{i}.png"))
                    for i, (image, seed) in enumerate(pairs)
                ]
                started = time.perf_counter()
                before = resource.getrusage(resource.RUSAGE_CHILDREN)
                done = subprocess.run(
                    [sys.executable, str(scripts[name]), json.dumps(jobs), str(args.processes)],
                    env=env,
                    capture_output=True,
                    text=True,
                    cwd=tmp,
                )
                if done.returncode != 0:
                    raise SystemExit(done.stderr[-3000:])
                seconds[name].append((time.perf_counter() - started) / len(jobs))
                after = resource.getrusage(resource.RUSAGE_CHILDREN)
                cpu[name].append((after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime) / len(jobs))
                outputs[name] = [np.asarray(Image.open(j[2])) for j in jobs]
                print(
                    f"round {round_index + 1} {name:10s} {seconds[name][-1]:.3f} s/image wall, "
                    f"{cpu[name][-1]:.3f} s/image CPU",
                    flush=True,
                )
    same = all(np.array_equal(a, b) for a, b in zip(outputs["reference"], outputs["ours"]))
    report = {
        "images": args.images,
        "size": args.size,
        "processes": args.processes,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "seconds_per_image": seconds,
        "cpu_seconds_per_image": cpu,
        "cpu_time_speedup_per_round": [r / o for r, o in zip(cpu["reference"], cpu["ours"])],
        "speedup_per_round": [r / o for r, o in zip(seconds["reference"], seconds["ours"])],
        "identical_labels": same,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    parser.add_argument("--out", default="bench/ir_labels.json")
    parser.add_argument("--reference", action="store_true", help="ours vs a reference-style loop, whole processes")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.reference:
        compare_reference(args)
        return
    runs, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_inputs(Path(tmp), args.images, *args.size)
        for workers in args.workers:
            out = Path(tmp) / f"out_{workers}"
            out.mkdir()
            jobs = [
                IrLabelJob(image, seed, str(out / f"{i}.png"), 0.35, 0.10, 0.7) for i, (image, seed) in enumerate(pairs)
            ]
            started = time.perf_counter()
            map_jobs(label_image, jobs, num_workers=workers, start_method="spawn", desc=f"{workers} workers")
            seconds = time.perf_counter() - started
            outputs[workers] = [Path(j.out).read_bytes() for j in jobs]
            runs.append(
                {"workers": workers, "seconds": round(seconds, 3), "images_per_s": round(len(jobs) / seconds, 3)}
            )
            print(runs[-1])
    first = outputs[args.workers[0]]
    report = {
        "images": args.images,
        "size": args.size,
        "cpu_count": os.cpu_count(),
        "machine": platform.processor(),
        "torch": torch.__version__,
        "identical_outputs": all(o == first for o in outputs.values()),
        "runs": runs,
        "note": "workers=0 runs in the main process; others include the pool's spawn start-up (~1-2 s)",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

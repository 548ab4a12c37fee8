"""`ir_labels` throughput against the worker count (spec §6a: two dense CRFs per image).

Makes `--images` VOC-sized inputs (500 x 375 RGB with smooth random CAMs of 2 classes) in a temp
folder, then labels them through the stage's own worker (`recam.stages.ir_labels.label_image`)
and pool (`recam.engine.pool.map_jobs`) with each worker count, and checks that every count
writes the same bytes. Writes bench/ir_labels.json.

    python scripts/bench_ir_labels.py --workers 0 1 2 --images 24
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

from recam.engine.pool import map_jobs
from recam.io import save_jpeg, save_npz
from recam.stages.ir_labels import IrLabelJob, label_image


def make_inputs(folder: Path, count: int, height: int, width: int) -> list[tuple[str, str]]:
    gen = torch.Generator().manual_seed(0)
    pairs = []
    for index in range(count):
        image = (torch.rand(3, height // 16, width // 16, generator=gen) * 255)
        image = F.interpolate(image[None], size=(height, width), mode="bilinear")[0].permute(1, 2, 0)
        cams = F.interpolate(torch.rand(1, 2, height // 32, width // 32, generator=gen), size=(height, width),
                             mode="bicubic")[0].clamp(0, 1)
        save_jpeg(folder / f"{index}.jpg", image.clamp(0, 255).byte().numpy())
        save_npz(folder / f"{index}.npz", keys=np.array([3, 11]), high_res=cams.numpy().astype(np.float16),
                 cam=cams[:, ::4, ::4].numpy())
        pairs.append((str(folder / f"{index}.jpg"), str(folder / f"{index}.npz")))
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--size", type=int, nargs=2, default=[375, 500], metavar=("H", "W"))
    parser.add_argument("--out", default="bench/ir_labels.json")
    args = parser.parse_args()
    runs, outputs = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        pairs = make_inputs(Path(tmp), args.images, *args.size)
        for workers in args.workers:
            out = Path(tmp) / f"out_{workers}"
            out.mkdir()
            jobs = [IrLabelJob(image, seed, str(out / f"{i}.png"), 0.35, 0.10, 0.7) for i, (image, seed) in enumerate(pairs)]
            started = time.perf_counter()
            map_jobs(label_image, jobs, num_workers=workers, start_method="spawn", desc=f"{workers} workers")
            seconds = time.perf_counter() - started
            outputs[workers] = [Path(j.out).read_bytes() for j in jobs]
            runs.append({"workers": workers, "seconds": round(seconds, 3),
                         "images_per_s": round(len(jobs) / seconds, 3)})
            print(runs[-1])
    first = outputs[args.workers[0]]
    report = {"images": args.images, "size": args.size, "cpu_count": os.cpu_count(), "machine": platform.processor(),
              "torch": torch.__version__, "identical_outputs": all(o == first for o in outputs.values()), "runs": runs,
              "note": "workers=0 runs in the main process; others include the pool's spawn start-up (~1-2 s)"}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()

"""Seed export throughput: size-bucketed batches vs one image at a time (same outputs).

Random-weight network (the speed does not depend on the weights), random images of a few sizes
(VOC's 375x500 / 500x375 mix by default), the spec's scales and flip. Writes bench/seeds.json.

    python scripts/bench_seeds.py                        # CPU, resnet18, 160x128 images
    python scripts/bench_seeds.py --arch resnet50 --voc  # VOC sizes (GPU recommended), add --amp on CUDA
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recam.data.datasets import collate_multiscale, multiscale_inputs, size_buckets
from recam.models.cam_net import build_cam_net
from recam.stages.seeds import export_batch

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def make_samples(count: int, sizes: list[tuple[int, int]], scales: list[float], classes: int) -> list[dict]:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(count):
        height, width = sizes[i % len(sizes)]
        label = np.zeros(classes, np.float32)
        label[rng.choice(classes, size=2, replace=False)] = 1
        image = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        samples.append({"id": str(i), "size": (height, width), "label": label,
                        "images": multiscale_inputs(image, scales, MEAN, STD)})
    return samples


def run(model, weight, samples, bucket_size: int, device: torch.device, amp: bool) -> tuple[float, list]:
    buckets = size_buckets([s["size"] for s in samples], bucket_size)
    outputs: list = [None] * len(samples)
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    for bucket in buckets:
        seeds = export_batch(model, weight, collate_multiscale([samples[i] for i in bucket]), device, amp)
        for i, seed in zip(bucket, seeds):
            outputs[i] = {k: v.cpu() for k, v in seed.items()}
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started, outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--bucket", type=int, default=8)
    parser.add_argument("--voc", action="store_true", help="VOC image sizes 375x500 / 500x375")
    parser.add_argument("--amp", action="store_true", help="also time CUDA autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench/seeds.json")
    args = parser.parse_args()

    device = torch.device(args.device)
    sizes = [(375, 500), (500, 375)] if args.voc else [(128, 160), (160, 128)]
    scales = [1.0, 0.5, 1.5, 2.0]
    model = build_cam_net(arch=args.arch, num_classes=20, pretrained="none").to(device).eval()
    weight = model.classifier.weight.detach().flatten(1)
    samples = make_samples(args.images, sizes, scales, 20)
    run(model, weight, samples[:2], 1, device, False)                       # warm-up
    single_s, single = run(model, weight, samples, 1, device, False)
    bucket_s, bucketed = run(model, weight, samples, args.bucket, device, False)
    max_diff = max(float((a[k] - b[k]).abs().max()) for a, b in zip(single, bucketed) for k in ("cam", "high_res"))
    result = {"device": str(device), "arch": args.arch, "images": args.images, "sizes": sizes, "scales": scales,
              "torch_threads": torch.get_num_threads(),
              "one_at_a_time_images_per_s": args.images / single_s,
              "bucketed_images_per_s": args.images / bucket_s, "bucket_size": args.bucket,
              "speedup": single_s / bucket_s, "max_abs_diff_bucketed_vs_single": max_diff}
    if args.amp and device.type == "cuda":
        amp_s, amp_out = run(model, weight, samples, args.bucket, device, True)
        result["bucketed_amp_images_per_s"] = args.images / amp_s
        result["max_abs_diff_amp_vs_fp32"] = max(float((a[k] - b[k]).abs().max())
                                                 for a, b in zip(single, amp_out) for k in ("cam", "high_res"))
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:36s} {value:.4g}" if isinstance(value, float) else f"{key:36s} {value}")


if __name__ == "__main__":
    main()

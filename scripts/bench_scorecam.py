"""Score-CAM: batched masked forwards vs one forward per channel (same maps). Writes bench/scorecam.json.

A torchvision ResNet (random weights: the speed does not depend on them), random images, target
layer `layer4`, one class. "per channel" is `chunk_size=1` (one forward per channel, the way the
Score-CAM reference code runs); "batched" runs `chunk_size` masked images per forward.

    python scripts/bench_scorecam.py                                   # CPU: resnet18 + resnet50, 128x128
    python scripts/bench_scorecam.py --archs resnet50 --size 224 --device cuda --chunks 64 256
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
import torchvision

from recam.cams.scorecam import score_cam


def time_per_image(model, images: torch.Tensor, chunk: int, repeats: int) -> tuple[float, torch.Tensor]:
    """Best of `repeats` runs, seconds per image; and the maps of the last run."""
    best = float("inf")
    for _ in range(repeats):
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        maps = score_cam(model, "layer4", images, [1], chunk_size=chunk)
        if images.device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / images.shape[0])
    return best, maps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", nargs="+", default=["resnet18", "resnet50"])
    parser.add_argument("--size", type=int, default=128, help="square image side")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--chunks", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = default)")
    parser.add_argument("--out", default="bench/scorecam.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    images = torch.randn(args.images, 3, args.size, args.size, device=device)
    results = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "size": args.size,
        "images": args.images,
        "runs": [],
    }
    for arch in args.archs:
        model = getattr(torchvision.models, arch)(weights=None).eval().to(device)
        per_channel, reference = time_per_image(model, images, 1, args.repeats)
        row = {"arch": arch, "channels": model.fc.in_features, "per_channel_s_per_image": round(per_channel, 3)}
        for chunk in args.chunks:
            batched, maps = time_per_image(model, images, chunk, args.repeats)
            row[f"batched_{chunk}_s_per_image"] = round(batched, 3)
            row[f"speedup_{chunk}"] = round(per_channel / batched, 2)
            row[f"max_abs_diff_{chunk}"] = float((maps - reference).abs().max())
        results["runs"].append(row)
        print(json.dumps(row))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""dataset=coco14 preparation cost and seed disk at COCO size (spec §11.4, §11.11).

Writes `--images` synthetic COCO-format train images of COCO's typical size (480 x 640, the
generator's polygon / RLE / crowd annotations) in a temp folder, then times `prepare_coco14`
rendering every mask cold with each worker count, and once more with every mask kept (resume).
Seed disk: one seed file in our format (`keys`, `cam` float32 at stride 4, `high_res` float16 or
float32 full size, uncompressed .npz) of 3 classes on a 480 x 640 image, scaled to COCO's 82,783
train images at the mean 2.867 labels per image (spec §11.3). Writes bench/coco.json.

    python scripts/bench_coco.py --images 24 --workers 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from recam.config import SyntheticParams
from recam.data.coco import prepare_coco14
from recam.data.synthetic import generate_synthetic_coco
from recam.io import save_npz

COCO_TRAIN = 82_783
LABELS_PER_IMAGE = 2.867 * 82_081 / 82_783  # annotated images' mean, the 702 empty ones add nothing


def seed_bytes(folder: Path, height: int, width: int, classes: int, dtype: str) -> int:
    h4, w4 = (height - 1) // 4 + 1, (width - 1) // 4 + 1
    path = folder / f"seed_{dtype}.npz"
    save_npz(
        path,
        keys=np.arange(classes, dtype=np.int64),
        cam=np.zeros((classes, h4, w4), np.float32),
        high_res=np.zeros((classes, height, width), dtype),
    )
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", default="bench/coco.json")
    args = parser.parse_args()
    results: dict = {"host": platform.node(), "cpus": os.cpu_count(), "images": args.images, "size": [480, 640]}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "MSCOCO"
        params = SyntheticParams(seed=0, n_train=args.images, n_val=1, n_extra=0, min_size=480, max_size=640)
        generate_synthetic_coco(root, params)
        for workers in args.workers:
            shutil.rmtree(root / "mask", ignore_errors=True)
            started = time.perf_counter()
            made = prepare_coco14(root, Path(tmp) / "view", splits=["train2014"], workers=workers)
            results[f"prepare_s_per_image_workers{workers}"] = round((time.perf_counter() - started) / args.images, 4)
            results[f"mask_s_per_image_workers{workers}"] = made["seconds_per_mask"]
        started = time.perf_counter()
        prepare_coco14(root, Path(tmp) / "view", splits=["train2014"], workers=1)
        results["resume_s_per_image"] = round((time.perf_counter() - started) / args.images, 5)
        masks = list((root / "mask" / "train2014").glob("*.png"))
        results["mask_png_bytes_per_image"] = int(np.mean([p.stat().st_size for p in masks]))
        for dtype in ("float16", "float32"):
            per_class = (seed_bytes(Path(tmp), 480, 640, 3, dtype) - seed_bytes(Path(tmp), 480, 640, 0, dtype)) / 3
            per_image = seed_bytes(Path(tmp), 480, 640, 0, dtype) + per_class * LABELS_PER_IMAGE
            results[f"seed_MB_per_image_{dtype}"] = round(per_image / 1e6, 3)
            results[f"seed_GB_train2014_{dtype}"] = round(per_image * COCO_TRAIN / 1e9, 1)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

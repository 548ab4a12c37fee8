"""Seed export throughput: size-bucketed batches vs one image at a time (same outputs), and our
export against a faithful one-image loop of the official `make_cam` (--reference).

Random-weight network (the speed does not depend on the weights), random images of a few sizes
(VOC's 375x500 / 500x375 mix by default), the spec's scales and flip. Writes bench/seeds.json.

    python scripts/bench_seeds.py                        # CPU, resnet18, 160x128 images
    python scripts/bench_seeds.py --arch resnet50 --voc  # VOC sizes (GPU recommended), add --amp on CUDA
    python scripts/bench_seeds.py --reference --threads 2 --images 6 --rounds 2   # vs make_cam, ~430x400
    python scripts/bench_seeds.py --preprocess --threads 1   # host PIL scales vs seeds.resize_on_device
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from recam.data import transforms as T
from recam.data.datasets import collate_multiscale, device_multiscale, multiscale_inputs, size_buckets
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
        samples.append(
            {
                "id": str(i),
                "size": (height, width),
                "label": label,
                "images": multiscale_inputs(image, scales, MEAN, STD),
            }
        )
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


# ~430x400 VOC-like sizes, all different (so bucketing can buy nothing, as on VOC's mixed sizes).
REFERENCE_SIZES = [(400, 430), (430, 400), (412, 428), (425, 405), (398, 440), (436, 396)]


def reference_inputs(image: np.ndarray, scales: list[float]) -> list[torch.Tensor]:
    """The reference's `VOC12ClassificationDatasetMSF` item as its DataLoader (batch 1) delivers it:
    per scale PIL bicubic rescale, normalise in HWC, `HWC_to_CHW` (a transposed *view*), then
    `np.stack([x, np.flip(x, -1)])` and the default collate - which keeps the transposed strides,
    so the (2, 3, H, W) batch reaches the network channels-last (the accident the issue found)."""
    from torch.utils.data import default_collate

    from recam.data import transforms as T

    stacks = []
    for scale in scales:
        scaled = image if scale == 1.0 else T.pil_rescale(image, scale)
        chw = np.transpose(T.normalize(scaled, MEAN, STD), (2, 0, 1))
        stacks.append(np.stack([chw, np.flip(chw, -1)], axis=0))
    return [batch[0] for batch in default_collate([{"img": stacks}])["img"]]


@torch.no_grad()
def reference_make_cam(
    model, weight: torch.Tensor, image: np.ndarray, label: np.ndarray, scales: list[float], out_path: Path
) -> dict:
    """One image of the official make_cam/make_recam loop (spec §4): per scale one forward of
    [x, flip(x)] through stage1-4, conv with the (K, C) weight, ReLU, x[0] + x[1].flip(-1); all K
    classes resized and summed, then the positive ones selected and max-normalised
    (adaptive_max_pool2d); saved as the pickled dict of .npy (keys, cam, high_res float32)."""
    import torch.nn.functional as F

    from recam.cams.fusion import padded_up_size, strided_size

    height, width = image.shape[:2]
    outputs = []
    for x in reference_inputs(image, scales):
        raw = F.relu(F.conv2d(model.backbone(x), weight[:, :, None, None]))
        outputs.append(raw[0] + raw[1].flip(-1))
    strided = torch.sum(
        torch.stack(
            [
                F.interpolate(o[None], strided_size(height, width, 4), mode="bilinear", align_corners=False)[0]
                for o in outputs
            ]
        ),
        0,
    )
    high = [
        F.interpolate(o[:, None], padded_up_size(height, width, 16), mode="bilinear", align_corners=False)
        for o in outputs
    ]
    high = torch.sum(torch.stack(high, 0), 0)[:, 0, :height, :width]
    valid = torch.nonzero(torch.from_numpy(label))[:, 0]
    strided = strided[valid]
    strided /= F.adaptive_max_pool2d(strided, (1, 1)) + 1e-5
    high = high[valid]
    high /= F.adaptive_max_pool2d(high, (1, 1)) + 1e-5
    np.save(out_path, {"keys": valid, "cam": strided.cpu(), "high_res": high.cpu().numpy()})
    return {"cam": strided, "high_res": high}


def ours_export(
    model,
    weight: torch.Tensor,
    image: np.ndarray,
    label: np.ndarray,
    scales: list[float],
    out_path: Path,
    high_dtype: str,
    amp: bool = False,
) -> dict:
    """One image through our `seeds` path: multiscale_inputs -> export_batch -> save_npz."""
    from recam.io import save_npz

    sample = {"id": "x", "size": image.shape[:2], "label": label, "images": multiscale_inputs(image, scales, MEAN, STD)}
    (seed,) = export_batch(model, weight, collate_multiscale([sample]), torch.device("cpu"), amp)
    save_npz(
        out_path,
        keys=np.flatnonzero(label > 0).astype(np.int64),
        cam=seed["cam"].numpy().astype(np.float32),
        high_res=seed["high_res"].numpy().astype(high_dtype),
    )
    return seed


def compare_reference(args: argparse.Namespace) -> None:
    """Interleaved rounds (reference, ours variants, reference, ...) on the same images and weights;
    ratios per round, so load from other processes hits every variant alike."""
    import tempfile

    from recam.models.fold import fold_batchnorm

    torch.set_num_threads(args.threads)
    scales = [1.0, 0.5, 1.5, 2.0]
    torch.manual_seed(0)
    model = build_cam_net(arch=args.arch, num_classes=20, pretrained="none").eval()
    weight = model.classifier.weight.detach().flatten(1)
    rng = np.random.default_rng(0)
    images = [
        rng.integers(0, 256, (*REFERENCE_SIZES[i % len(REFERENCE_SIZES)], 3), dtype=np.uint8)
        for i in range(args.images)
    ]
    labels = []
    for _ in images:
        label = np.zeros(20, np.float32)
        label[rng.choice(20, size=2, replace=False)] = 1
        labels.append(label)
    channels_last = model.to(memory_format=torch.channels_last)
    import copy

    folded = fold_batchnorm(copy.deepcopy(model)).to(memory_format=torch.channels_last)
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    variants = {
        "reference": lambda i, out: reference_make_cam(plain, weight, images[i], labels[i], scales, out / f"{i}.npy"),
        "ours_nchw": lambda i, out: ours_export(
            plain, weight, images[i], labels[i], scales, out / f"{i}.npz", "float16"
        ),
        "ours_channels_last": lambda i, out: ours_export(
            channels_last, weight, images[i], labels[i], scales, out / f"{i}.npz", "float16"
        ),
        "ours_channels_last_folded_bn": lambda i, out: ours_export(
            folded, weight, images[i], labels[i], scales, out / f"{i}.npz", "float16"
        ),
        "ours_channels_last_folded_bn_bf16": lambda i, out: ours_export(
            folded, weight, images[i], labels[i], scales, out / f"{i}.npz", "float16", amp=True
        ),
    }
    chosen = {k: v for k, v in variants.items() if k == "reference" or k in args.variants}
    seconds: dict[str, list[float]] = {name: [] for name in chosen}
    # CPU seconds of this process: with one thread far less sensitive to other processes' load
    # than the wall clock (the "1.49x the CPU time" figure is this one).
    cpu: dict[str, list[float]] = {name: [] for name in chosen}
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for round_index in range(args.rounds):
            for name, fn in chosen.items():
                out = Path(tmp) / name
                out.mkdir(exist_ok=True)
                started, cpu_started = time.perf_counter(), time.process_time()
                results[name] = [fn(i, out) for i in range(len(images))]
                seconds[name].append((time.perf_counter() - started) / len(images))
                cpu[name].append((time.process_time() - cpu_started) / len(images))
                print(
                    f"round {round_index + 1} {name:32s} {seconds[name][-1]:.3f} s/image wall, "
                    f"{cpu[name][-1]:.3f} s/image CPU",
                    flush=True,
                )
    diffs = {
        name: max(
            float((a[k].float() - b[k].float()).abs().max())
            for a, b in zip(results[name], results["reference"])
            for k in ("cam", "high_res")
        )
        for name in chosen
        if name != "reference"
    }
    ratios = {
        name: [r / o for r, o in zip(seconds["reference"], seconds[name])] for name in chosen if name != "reference"
    }
    cpu_ratios = {name: [r / o for r, o in zip(cpu["reference"], cpu[name])] for name in chosen if name != "reference"}
    result = {
        "device": "cpu",
        "arch": args.arch,
        "threads": args.threads,
        "images": args.images,
        "sizes": [list(REFERENCE_SIZES[i % len(REFERENCE_SIZES)]) for i in range(args.images)],
        "scales": scales,
        "rounds": args.rounds,
        "seconds_per_image": seconds,
        "cpu_seconds_per_image": cpu,
        "speedup_vs_reference_per_round": ratios,
        "cpu_time_speedup_vs_reference_per_round": cpu_ratios,
        "max_abs_diff_vs_reference (float32, before float16)": diffs,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def compare_preprocess(args: argparse.Namespace) -> None:
    """The multi-scale inputs of one VOC-sized image: the host path (PIL bicubic per scale, float64
    normalisation, one float32 tensor per scale to copy) against `device_multiscale` (one uint8
    copy, torch's antialiased bicubic where the network runs), per image, and how far the pixels move."""
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rng = np.random.default_rng(0)
    scales = [1.0, 0.5, 1.5, 2.0]
    # smooth images (a coarse random field upscaled), closer to photographs than white noise
    images = [T.pil_resize(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8), (375, 500)) for _ in range(args.images)]

    def host(image: np.ndarray) -> list[torch.Tensor]:
        return [x.to(device) for x in multiscale_inputs(image, scales, MEAN, STD)]

    def on_device(image: np.ndarray) -> list[torch.Tensor]:
        return device_multiscale(torch.from_numpy(T.to_chw(image))[None].to(device), scales, MEAN, STD)

    def timed(fn) -> float:
        fn(images[0])  # warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for image in images:
            fn(image)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / len(images)

    rounds = [(timed(host), timed(on_device)) for _ in range(args.rounds)]
    grey = 1 / 255 / min(STD)
    diffs = [(d[0] - h).abs() for image in images[:2] for h, d in zip(host(image), on_device(image))]
    result = {
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "image": [375, 500],
        "scales": scales,
        "images": args.images,
        "host_ms_per_image": [round(1000 * h, 2) for h, _ in rounds],
        "on_device_ms_per_image": [round(1000 * d, 2) for _, d in rounds],
        "speedup": [round(h / d, 2) for h, d in rounds],
        "bytes_copied_per_image_host": int(sum(4 * 3 * np.prod(T.scaled_size(375, 500, s)) for s in scales)),
        "bytes_copied_per_image_on_device": 375 * 500 * 3,
        "max_diff_grey_levels": round(max(float(d.max()) for d in diffs) / grey, 3),
        "fraction_of_values_moved": round(float(np.mean([float((d > grey / 2).float().mean()) for d in diffs])), 4),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--bucket", type=int, default=8)
    parser.add_argument("--voc", action="store_true", help="VOC image sizes 375x500 / 500x375")
    parser.add_argument("--amp", action="store_true", help="also time CUDA autocast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="bench/seeds.json")
    parser.add_argument("--reference", action="store_true", help="ours vs a faithful make_cam loop (CPU)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--variants", nargs="*", default=["ours_nchw", "ours_channels_last", "ours_channels_last_folded_bn"]
    )
    parser.add_argument("--preprocess", action="store_true", help="host PIL scales vs seeds.resize_on_device")
    args = parser.parse_args()
    if args.preprocess:
        if args.out == "bench/seeds.json":
            args.out = "bench/seeds_preprocess.json"
        compare_preprocess(args)
        return
    if args.reference:
        if args.arch == "resnet18":
            args.arch = "resnet50"
        compare_reference(args)
        return

    device = torch.device(args.device)
    sizes = [(375, 500), (500, 375)] if args.voc else [(128, 160), (160, 128)]
    scales = [1.0, 0.5, 1.5, 2.0]
    model = build_cam_net(arch=args.arch, num_classes=20, pretrained="none").to(device).eval()
    weight = model.classifier.weight.detach().flatten(1)
    samples = make_samples(args.images, sizes, scales, 20)
    run(model, weight, samples[:2], 1, device, False)  # warm-up
    single_s, single = run(model, weight, samples, 1, device, False)
    bucket_s, bucketed = run(model, weight, samples, args.bucket, device, False)
    max_diff = max(float((a[k] - b[k]).abs().max()) for a, b in zip(single, bucketed) for k in ("cam", "high_res"))
    result = {
        "device": str(device),
        "arch": args.arch,
        "images": args.images,
        "sizes": sizes,
        "scales": scales,
        "torch_threads": torch.get_num_threads(),
        "one_at_a_time_images_per_s": args.images / single_s,
        "bucketed_images_per_s": args.images / bucket_s,
        "bucket_size": args.bucket,
        "speedup": single_s / bucket_s,
        "max_abs_diff_bucketed_vs_single": max_diff,
    }
    if args.amp and device.type == "cuda":
        amp_s, amp_out = run(model, weight, samples, args.bucket, device, True)
        result["bucketed_amp_images_per_s"] = args.images / amp_s
        result["max_abs_diff_amp_vs_fp32"] = max(
            float((a[k] - b[k]).abs().max()) for a, b in zip(single, amp_out) for k in ("cam", "high_res")
        )
        result["peak_memory_mib"] = torch.cuda.max_memory_allocated() / 2**20
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    for key, value in result.items():
        print(f"{key:36s} {value:.4g}" if isinstance(value, float) else f"{key:36s} {value}")


if __name__ == "__main__":
    main()

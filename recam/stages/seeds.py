"""Stage `seeds`: multi-scale + flip CAM / ReCAM export, one `.npz` per image (spec §4).

Per image: `keys` (n,) int64 0-based classes, `cam` (n, h4, w4) float32 stride-4 map,
`high_res` (n, H, W) full-resolution map (float16 by default; the reference stores float32).
Images of equal size run as one batched forward per scale, with the flip pair in the same batch;
no padding is involved, so the numbers equal the one-image path. Files already present are
skipped, so an interrupted export resumes; `num_shards`/`shard_index` split it over processes.

`seeds.method` is `cam`, `recam`, or a CAM-family method of `recam/cams/methods.py` (gradcam,
scorecam, ...). The family methods all use the trained `cam` classifier and the same flip +
multi-scale fusion and file format, so `eval_seeds` scores them unchanged; they run one image (and
its mirror) per call, for the image's own classes. (`cam` keeps its one-forward closed form,
which the library CAM equals - tests/unit/test_cams.py.)
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from recam.engine.progress import progress

from recam.cams.fusion import CAM_STRIDE, fuse_flip, fuse_scales, keys_from_label, strided_size
from recam.cams.methods import CAM_METHODS, compute_cams
from recam.config import Config, SeedsStage
from recam.data.datasets import MultiScaleDataset, collate_multiscale, device_multiscale, image_size, size_buckets
from recam.engine.checkpoint import check_class_names, load_checkpoint, load_model_state
from recam.engine.distributed import is_main, rank, world_size
from recam.engine.loop import autocast
from recam.engine.memory import PeakMemory
from recam.errors import RecamInputError
from recam.io import readable, save_npz
from recam.models.cam_net import CamNet
from recam.models.fold import fold_batchnorm
from recam.models.recam_net import RecamNet
from recam.rundir import RunDir, config_slice
from recam.stages.common import cam_net_from_config, load_prepared
from recam.models.spg import SPGNet
from recam.stages.spg import spg_net_from_config

log = logging.getLogger(__name__)

METHODS = ("cam", "recam", "spg", *(m for m in CAM_METHODS if m != "cam"))
# SPG read-out (spg-spec.md §7.1): per-class min-max of the class maps; the epsilon keeps a constant
# map at 0 instead of the reference's NaN (spec §10 quirk 17).
SPG_NORM_EPS = 1e-8
# Settings that only the CAM-family methods read: left out of the config slice of cam/recam seeds.
FAMILY_SETTINGS = ("target_layer", "chunk_size", "top_k", "noise_seed", "n_samples", "noise_std")


def source_stage(method: str) -> str:
    """The stage whose classifier a seed method uses: `recam` for ReCAM, `spg` for SPG, `cam` for every other."""
    return method if method in ("recam", "spg") else "cam"


def method_options(stage: SeedsStage) -> dict:
    """The CAM-family options of the config (None = the method's own default)."""
    return {
        "chunk_size": stage.chunk_size,
        "top_k": stage.top_k,
        "seed": stage.noise_seed,
        "n_samples": stage.n_samples,
        "noise_std": stage.noise_std,
    }


def load_seed_model(
    cfg: Config, rundir: RunDir, num_classes: int, class_names: list[str]
) -> tuple[CamNet | SPGNet, torch.Tensor | None]:
    """The trained network of `seeds.method` and its (K, C) class-map weight (W, or W (.) V;
    None for SPG, whose class maps come from its own forward)."""
    method = cfg.seeds.method
    if method not in METHODS:
        raise RecamInputError(f"recam: seeds.method={method!r} is not one of {', '.join(METHODS)}")
    source = source_stage(method)
    folder = rundir.require(source)
    epoch = cfg.seeds.checkpoint_epoch
    path = folder / "model.pt" if epoch is None else folder / "checkpoints" / f"epoch_{epoch}.pt"
    if not path.is_file():
        raise RecamInputError(
            f"recam: {path} does not exist - seeds.checkpoint_epoch={epoch} needs "
            f"{source}.keep_epochs=true and at least {epoch} epochs"
        )
    checkpoint = load_checkpoint(path)
    check_class_names(checkpoint, class_names, path)
    if source == "spg":
        spg_net = spg_net_from_config(cfg.spg, num_classes, pretrained="none")
        load_model_state(spg_net, checkpoint["model"], path)
        return spg_net, None
    cam_net = cam_net_from_config(cfg.model, num_classes, pretrained="none")
    if source == "cam":
        load_model_state(cam_net, checkpoint["model"], path)
        return cam_net, cam_net.classifier.weight.detach().flatten(1)
    model = RecamNet(cam_net)
    load_model_state(model, checkpoint["model"], path)
    return cam_net, model.cam_weight(fused=cfg.seeds.use_fused_weight).detach()


@torch.no_grad()
def export_batch(
    model: CamNet, weight: torch.Tensor, batch: dict, device: torch.device, amp: bool, flip: bool = True
) -> list[dict[str, torch.Tensor]]:
    """Seeds of one size bucket: per scale one forward of [x_1..x_n, mirror(x_1)..mirror(x_n)]
    (`flip=False`: of [x_1..x_n] alone, a non-reference ablation)."""
    count = len(batch["ids"])
    fused: list[list[torch.Tensor]] = [[] for _ in range(count)]
    for images in batch["images"]:
        images = images.to(device)
        with autocast(device, amp):
            features = model.backbone(torch.cat([images, images.flip(-1)]) if flip else images)
        raw = model.class_maps(features.float(), weight)
        for i in range(count):
            fused[i].append(fuse_flip(torch.stack([raw[i], raw[count + i]])) if flip else F.relu(raw[i]))
    return [
        fuse_scales(fused[i], batch["size"], keys_from_label(torch.from_numpy(batch["labels"][i])).to(device))
        for i in range(count)
    ]


@torch.no_grad()
def export_batch_spg(model: SPGNet, batch: dict, device: torch.device, amp: bool) -> list[dict[str, torch.Tensor]]:
    """SPG seeds of one size bucket: per scale one forward of [x_1..x_n, mirror(x_1)..mirror(x_n)];
    each class map min-max normalised at feature resolution (the reference read-out), then the
    same flip and scale fusion as `export_batch`. Also "scores": (K,) logits averaged over scales
    and flips (for top-1 localization). Whole images, not the reference's centre crop (spec §7.5)."""
    count = len(batch["ids"])
    fused: list[list[torch.Tensor]] = [[] for _ in range(count)]
    scores = [[] for _ in range(count)]
    for images in batch["images"]:
        images = images.to(device)
        with autocast(device, amp):
            out = model(torch.cat([images, images.flip(-1)]))
        maps = out["class_maps"].float()
        low = maps.amin(dim=(-2, -1), keepdim=True)
        loc = (maps - low) / (maps.amax(dim=(-2, -1), keepdim=True) - low + SPG_NORM_EPS)
        for i in range(count):
            fused[i].append(fuse_flip(torch.stack([loc[i], loc[count + i]])))
            scores[i].append(out["logits"][[i, count + i]].float().mean(dim=0))
    return [
        {
            **fuse_scales(fused[i], batch["size"], keys_from_label(torch.from_numpy(batch["labels"][i])).to(device)),
            "scores": torch.stack(scores[i]).mean(dim=0),
        }
        for i in range(count)
    ]


def export_channels_last(stage: SeedsStage, runtime_channels_last: bool, device: torch.device) -> bool:
    """The layout of the export: seeds.channels_last, or where that is None the fastest of the
    device - channels_last on CPU (oneDNN's NHWC convolutions; the reference gets it by accident
    from a transposed numpy array, spec §4 / docs/performance.md), runtime.channels_last on CUDA."""
    if stage.channels_last is not None:
        return stage.channels_last
    return device.type == "cpu" or runtime_channels_last


def export_batch_method(
    model: CamNet, batch: dict, device: torch.device, method: str, target_layer: str, options: dict, flip: bool = True
) -> list[dict[str, torch.Tensor]]:
    """Seeds of one size bucket by CAM-family `method`: per image and scale, one call on
    [x, mirror(x)] for the image's classes, then the same flip and scale fusion as `export_batch`.
    The noise of the smoothing methods is seeded the same way for every image, so a resumed or
    sharded export writes the same files."""
    seeds = []
    for i in range(len(batch["ids"])):
        keys = keys_from_label(torch.from_numpy(batch["labels"][i])).to(device)
        if keys.numel() == 0:  # no class: nothing to explain, no forward needed
            height, width = batch["size"]
            seeds.append(
                {
                    "cam": torch.zeros(0, *strided_size(height, width, CAM_STRIDE)),
                    "high_res": torch.zeros(0, height, width),
                }
            )
            continue
        fused = []
        for images in batch["images"]:
            x = images[i : i + 1].to(device)
            maps = compute_cams(method, model, target_layer, torch.cat([x, x.flip(-1)]) if flip else x, keys, **options)
            fused.append(fuse_flip(maps) if flip else F.relu(maps[0]))
        seeds.append(fuse_scales(fused, batch["size"], torch.arange(len(keys), device=device)))
    return seeds


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.seeds, cfg.dataset
    if stage.high_res_dtype not in ("float16", "float32"):
        raise RecamInputError(f"recam: seeds.high_res_dtype={stage.high_res_dtype!r} - use float16 or float32")
    data = load_prepared(rundir, data_cfg)
    out = rundir.stage_dir("seeds", stage.method)
    model, weight = load_seed_model(cfg, rundir, len(data.class_names), data.class_names)
    slice_ = config_slice(cfg, "dataset", "model", "seeds")
    ignored = ("num_shards", "shard_index", "bucket_size", "channels_last", "fold_bn") + (
        FAMILY_SETTINGS if stage.method in ("cam", "recam", "spg") else ()
    )
    slice_["seeds"] = {k: v for k, v in slice_["seeds"].items() if k not in ignored}
    if not stage.resize_on_device:  # the reference's host path: the key of runs made before the switch existed
        del slice_["seeds"]["resize_on_device"]
    amp = cfg.amp_for("seeds")
    if stage.method in (
        "cam",
        "recam",
        "spg",
    ):  # the resolved precision changes their outputs; the family runs in float32
        slice_["seeds"]["amp"] = amp
    else:
        del slice_["seeds"]["amp"]
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    model = model.to(device).eval()
    if stage.fold_bn and stage.method in ("cam", "recam"):  # the family methods keep the trained modules
        model = fold_batchnorm(model)
    weight = weight.to(device) if weight is not None else None
    if export_channels_last(stage, cfg.runtime.channels_last, device):
        model = model.to(memory_format=torch.channels_last)
    all_ids = data.ids(stage.split)
    shards, shard = stage.num_shards, stage.shard_index
    if shards == 1 and world_size() > 1:  # under torchrun: one shard per rank
        shards, shard = world_size(), rank()
    if not 0 <= shard < shards:
        raise RecamInputError(f"recam: seeds.shard_index={shard} is outside 0..{shards - 1} (seeds.num_shards)")
    todo = [i for i in all_ids[shard::shards] if not readable(out / f"{i}.npz")]  # a damaged file is redone
    log.info("seeds/%s: %d of %d images to export (shard %d/%d)", stage.method, len(todo), len(all_ids), shard, shards)
    dataset = MultiScaleDataset(
        data_cfg.root, todo, data.labels, stage.scales, data_cfg.mean, data_cfg.std, on_device=stage.resize_on_device
    )
    buckets = size_buckets([image_size(data_cfg.root, i) for i in todo], stage.bucket_size)
    loader = DataLoader(
        dataset,
        batch_sampler=buckets,
        collate_fn=collate_multiscale,
        num_workers=cfg.runtime.num_workers,
        pin_memory=device.type == "cuda",
    )
    high_dtype = np.dtype(stage.high_res_dtype)

    def export(batch: dict) -> list[dict[str, torch.Tensor]]:
        if stage.resize_on_device:  # one uint8 copy to the device, every scale made there
            pixels = batch["images"][0].to(device, non_blocking=True)
            batch = {**batch, "images": device_multiscale(pixels, stage.scales, data_cfg.mean, data_cfg.std)}
        if stage.method == "spg":
            return export_batch_spg(model, batch, device, amp)
        if stage.method in ("cam", "recam"):
            return export_batch(model, weight, batch, device, amp, stage.flip)
        # float32: the gradient and score methods do not run under autocast
        return export_batch_method(
            model, batch, device, stage.method, stage.target_layer, method_options(stage), stage.flip
        )

    with (
        PeakMemory(device) as memory,
        progress(
            total=len(todo), desc=f"seeds/{stage.method}", unit="img", dynamic_ncols=True, disable=not is_main()
        ) as bar,
    ):
        for batch in loader:
            for image_id, label, seed in zip(batch["ids"], batch["labels"], export(batch)):
                extra = {"scores": seed["scores"].cpu().numpy().astype(np.float32)} if "scores" in seed else {}
                save_npz(
                    out / f"{image_id}.npz",
                    keys=np.flatnonzero(label > 0).astype(np.int64),
                    cam=seed["cam"].cpu().numpy().astype(np.float32),
                    high_res=seed["high_res"].cpu().numpy().astype(high_dtype),
                    **extra,
                )
            bar.update(len(batch["ids"]))
    missing = [i for i in all_ids if not (out / f"{i}.npz").is_file()]
    results = {
        "method": stage.method,
        "split": stage.split,
        "images": len(all_ids),
        "exported_now": len(todo),
        "seconds_per_image": round(bar.format_dict["elapsed"] / max(len(todo), 1), 4),
        **memory.result(),
    }
    if missing:  # other shards still running: their last one to finish writes DONE
        log.info("seeds/%s: %d images belong to other shards and are not exported yet", stage.method, len(missing))
        return results
    rundir.finish(out, slice_, results)
    return results

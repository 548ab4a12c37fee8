"""Stage `seeds`: multi-scale + flip CAM / ReCAM export, one `.npz` per image (spec §4).

Per image: `keys` (n,) int64 0-based classes, `cam` (n, h4, w4) float32 stride-4 map,
`high_res` (n, H, W) full-resolution map (float16 by default; the reference stores float32).
Images of equal size run as one batched forward per scale, with the flip pair in the same batch;
no padding is involved, so the numbers equal the one-image path. Files already present are
skipped, so an interrupted export resumes; `num_shards`/`shard_index` split it over processes.
"""
from __future__ import annotations

import logging
import os

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm import tqdm

from recam.cams.fusion import fuse_flip, fuse_scales, keys_from_label
from recam.config import Config
from recam.data.datasets import MultiScaleDataset, collate_multiscale, image_size, size_buckets
from recam.engine.checkpoint import check_class_names, load_checkpoint, load_model_state
from recam.engine.loop import autocast
from recam.errors import RecamInputError
from recam.io import save_npz
from recam.models.cam_net import CamNet
from recam.models.recam_net import RecamNet
from recam.pipeline import RunDir, config_slice
from recam.stages.common import cam_net_from_config, load_prepared, begin_stage

log = logging.getLogger(__name__)

METHODS = ("cam", "recam")


def load_seed_model(cfg: Config, rundir: RunDir, num_classes: int, class_names: list[str]) -> tuple[CamNet, torch.Tensor]:
    """The trained network of `seeds.method` and its (K, C) class-map weight (W, or W (.) V)."""
    method = cfg.seeds.method
    if method not in METHODS:
        raise RecamInputError(f"recam: seeds.method={method!r} is not one of {', '.join(METHODS)}")
    folder = rundir.require(method)
    epoch = cfg.seeds.checkpoint_epoch
    source = folder / "model.pt" if epoch is None else folder / "checkpoints" / f"epoch_{epoch}.pt"
    if not source.is_file():
        raise RecamInputError(f"recam: {source} does not exist - seeds.checkpoint_epoch={epoch} needs "
                              f"{method}.keep_epochs=true and at least {epoch} epochs")
    cam_net = cam_net_from_config(cfg.model, num_classes, pretrained="none")
    checkpoint = load_checkpoint(source)
    check_class_names(checkpoint, class_names, source)
    if method == "cam":
        load_model_state(cam_net, checkpoint["model"], source)
        return cam_net, cam_net.classifier.weight.detach().flatten(1)
    model = RecamNet(cam_net)
    load_model_state(model, checkpoint["model"], source)
    return cam_net, model.cam_weight(fused=cfg.seeds.use_fused_weight).detach()


@torch.no_grad()
def export_batch(model: CamNet, weight: torch.Tensor, batch: dict, device: torch.device,
                 amp: bool) -> list[dict[str, torch.Tensor]]:
    """Seeds of one size bucket: per scale one forward of [x_1..x_n, mirror(x_1)..mirror(x_n)]."""
    count = len(batch["ids"])
    fused: list[list[torch.Tensor]] = [[] for _ in range(count)]
    for images in batch["images"]:
        images = images.to(device)
        with autocast(device, amp):
            features = model.backbone(torch.cat([images, images.flip(-1)]))
        raw = model.class_maps(features.float(), weight)
        for i in range(count):
            fused[i].append(fuse_flip(torch.stack([raw[i], raw[count + i]])))
    return [fuse_scales(fused[i], batch["size"], keys_from_label(torch.from_numpy(batch["labels"][i])).to(device))
            for i in range(count)]


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.seeds, cfg.dataset
    if stage.high_res_dtype not in ("float16", "float32"):
        raise RecamInputError(f"recam: seeds.high_res_dtype={stage.high_res_dtype!r} - use float16 or float32")
    data = load_prepared(rundir, data_cfg)
    out = rundir.stage_dir("seeds", stage.method)
    model, weight = load_seed_model(cfg, rundir, len(data.class_names), data.class_names)
    slice_ = config_slice(cfg, "dataset", "model", "seeds")
    slice_["seeds"] = {k: v for k, v in slice_["seeds"].items() if k not in ("num_shards", "shard_index", "bucket_size")}
    if (done := begin_stage(rundir, out, slice_, cfg.run.force)) is not None:
        return done
    model = model.to(device).eval()
    weight = weight.to(device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    all_ids = data.ids(stage.split)
    shards, shard = stage.num_shards, stage.shard_index
    if shards == 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:   # under torchrun: one shard per rank
        shards, shard = int(os.environ["WORLD_SIZE"]), int(os.environ.get("RANK", "0"))
    if not 0 <= shard < shards:
        raise RecamInputError(f"recam: seeds.shard_index={shard} is outside 0..{shards - 1} (seeds.num_shards)")
    todo = [i for i in all_ids[shard::shards] if not (out / f"{i}.npz").is_file()]
    log.info("seeds/%s: %d of %d images to export (shard %d/%d)", stage.method, len(todo), len(all_ids), shard, shards)
    dataset = MultiScaleDataset(data_cfg.root, todo, data.labels, stage.scales, data_cfg.mean, data_cfg.std)
    buckets = size_buckets([image_size(data_cfg.root, i) for i in todo], stage.bucket_size)
    loader = DataLoader(dataset, batch_sampler=buckets, collate_fn=collate_multiscale,
                        num_workers=cfg.runtime.num_workers)
    high_dtype = np.dtype(stage.high_res_dtype)
    with tqdm(total=len(todo), desc=f"seeds/{stage.method}", unit="img", dynamic_ncols=True) as bar:
        for batch in loader:
            for image_id, label, seed in zip(batch["ids"], batch["labels"], export_batch(model, weight, batch, device, cfg.runtime.amp)):
                save_npz(out / f"{image_id}.npz", keys=np.flatnonzero(label > 0).astype(np.int64),
                         cam=seed["cam"].cpu().numpy().astype(np.float32),
                         high_res=seed["high_res"].cpu().numpy().astype(high_dtype))
            bar.update(len(batch["ids"]))
    missing = [i for i in all_ids if not (out / f"{i}.npz").is_file()]
    results = {"method": stage.method, "split": stage.split, "images": len(all_ids), "exported_now": len(todo),
               "seconds_per_image": round(bar.format_dict["elapsed"] / max(len(todo), 1), 4)}
    if missing:  # other shards still running: their last one to finish writes DONE
        log.info("seeds/%s: %d images belong to other shards and are not exported yet", stage.method, len(missing))
        return results
    rundir.finish(out, slice_, results)
    return results

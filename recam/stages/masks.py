"""Stage `masks`: pseudo masks from the seeds, by random walk over IRN boundaries or by dense CRF.

`masks.method=irn` (spec §6c, reference `make_sem_seg_labels`): boundary map of the full image and
its mirror, the stride-4 seeds propagated by 2^exp_times sparse transition steps (`random_walk`,
not the reference's dense N x N matrix power), upsampled, globally max-normalised, background
plane `bg_threshold`, argmax. With `save_scores` the stride-4 walk is kept as `<id>.npz` so that
`eval_masks` can sweep the background threshold in one pass.
`masks.method=crf` (non-reference ablation, spec §6c "Dense CRF route"): the seed label at
`seed_threshold`, refined by the dense CRF of spec §6a (or §7's kernels), in a process pool.
Both write one palette PNG per image (0 background, k+1 class k); existing files are skipped.
`bg_threshold=auto` (irn) / `seed_threshold=auto` (crf): chosen without ground truth before any
mask is written, on the walk (or the seeds) of the `thresholds` sample (recam/thresholds).
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from recam.engine.progress import progress

from recam.config import Config
from recam.data.datasets import read_image
from recam.data.transforms import normalize, to_chw
from recam.data.voc12 import image_path
from recam.engine.checkpoint import load_checkpoint, load_model_state
from recam.engine.distributed import is_main, rank, world_size
from recam.engine.pool import map_jobs
from recam.errors import RecamInputError
from recam.io import load_npz, markdown_table, readable, save_label_png, save_npz
from recam.masks.random_walk import random_walk, rw_to_label, upsample_walk
from recam.models.irn import build_irn
from recam.rundir import RunDir, config_slice
from recam.stages.auto_thresholds import is_auto, sample_of, select, seed_threshold
from recam.stages.common import load_prepared

# The worker lives in a torch-free module, so spawned workers start in a fraction of a second.
from recam.stages.crf_workers import KERNELS, CrfMaskJob, crf_mask
from recam.stages.eval_seeds import DEFAULT_THRESHOLD
from recam.thresholds import ScoreMap

log = logging.getLogger(__name__)

METHODS = ("irn", "crf")
RUNTIME_KEYS = ("num_workers", "start_method")
# The settings each method reads; the others stay out of its stage key.
METHOD_KEYS = {
    "irn": ("radius", "beta", "exp_times", "bg_threshold", "save_scores"),
    "crf": ("seed_threshold", "crf_kernels", "gt_prob"),
}


def _seed_threshold(cfg: Config) -> float:
    stage = cfg.masks
    return stage.seed_threshold if stage.seed_threshold is not None else DEFAULT_THRESHOLD.get(stage.seeds, 0.21)


def _auto(cfg: Config) -> bool:
    """Whether this method's threshold is `auto` (each field checked: a number in (0, 1) or auto)."""
    stage = cfg.masks
    crf = is_auto(stage.seed_threshold, "masks.seed_threshold")
    irn = is_auto(stage.bg_threshold, "masks.bg_threshold")
    return crf if stage.method == "crf" else irn


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.masks
    if stage.method not in METHODS:
        raise RecamInputError(f"recam: masks.method={stage.method!r} is not one of {', '.join(METHODS)}")
    if stage.crf_kernels not in KERNELS:
        raise RecamInputError(f"recam: masks.crf_kernels={stage.crf_kernels!r} - use one of {', '.join(KERNELS)}")
    data = load_prepared(rundir, cfg.dataset)
    seeds = rundir.require("seeds", stage.seeds)
    irn_dir = rundir.require("irn") if stage.method == "irn" else None
    out = rundir.stage_dir("masks", stage.method)
    slice_ = config_slice(cfg, "dataset", "masks")
    slice_["masks"] = {
        k: v for k, v in slice_["masks"].items() if k in ("method", "seeds", "split", *METHOD_KEYS[stage.method])
    }
    auto = _auto(cfg)
    if auto:
        slice_.update(config_slice(cfg, "thresholds"))
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    ids = data.ids(stage.split)
    missing = [i for i in ids if not (seeds / f"{i}.npz").is_file()]
    if missing:
        raise RecamInputError(
            f"recam: {len(missing)} seeds are missing in {seeds} (e.g. {missing[0]}) - export "
            f"seeds for masks.split={stage.split} (seeds.split)"
        )
    # Under torchrun each rank makes every world_size-th missing mask; rank 0 finishes the stage.
    save_scores = stage.method == "irn" and stage.save_scores
    todo = [i for i in ids if not readable(out / f"{i}.png") or (save_scores and not readable(out / f"{i}.npz"))][
        rank() :: world_size()
    ]
    log.info("masks/%s: %d of %d images to do", stage.method, len(todo), len(ids))
    results = {
        "method": stage.method,
        "seeds": stage.seeds,
        "split": stage.split,
        "images": len(ids),
        "made_now": len(todo),
    }
    if stage.method == "crf":
        chosen = seed_threshold(cfg, data, seeds) if auto else None
        threshold = chosen["threshold"] if chosen else _seed_threshold(cfg)
        jobs = [
            CrfMaskJob(
                str(image_path(cfg.dataset.root, i)),
                str(seeds / f"{i}.npz"),
                str(out / f"{i}.png"),
                threshold,
                stage.gt_prob,
                stage.crf_kernels,
            )
            for i in todo
        ]
        map_jobs(crf_mask, jobs, num_workers=stage.num_workers, start_method=stage.start_method, desc="masks/crf")
    else:
        model = load_irn(cfg, irn_dir, device)
        chosen = walk_threshold(cfg, model, seeds, sample_of(data, cfg.thresholds), device) if auto else None
        threshold = chosen["threshold"] if chosen else float(stage.bg_threshold)
        walk_masks(cfg, model, seeds, out, todo, device, threshold)
    results["threshold"] = threshold
    if chosen is not None:
        results["auto"] = chosen
    if any(
        not (out / f"{i}.png").is_file() or (save_scores and not (out / f"{i}.npz").is_file()) for i in ids
    ):  # other ranks' shares are not written yet
        return results
    table = f"# masks/{stage.method}\n\n" + markdown_table(["key", "value"], [[k, v] for k, v in results.items()])
    rundir.finish(out, slice_, results, table)
    return results


def load_irn(cfg: Config, irn_dir, device: torch.device) -> torch.nn.Module:
    source = irn_dir / "model.pt"
    checkpoint = load_checkpoint(source)
    model = build_irn(arch=checkpoint.get("arch", cfg.irn.arch), pretrained="none")
    load_model_state(model, checkpoint["model"], source)
    return model.to(device).eval()


@torch.no_grad()
def walk_image(cfg: Config, model: torch.nn.Module, seeds, image_id: str, device: torch.device) -> dict:
    """One image's walk: edge inference (image + mirror), sparse random walk of its stride-4 seeds.
    Returns {"image": (H, W, 3) uint8, "keys": (K,) int64, "rw": (K, h, w) tensor}."""
    stage = cfg.masks
    image = read_image(cfg.dataset.root, image_id)
    x = torch.from_numpy(to_chw(normalize(image, cfg.dataset.mean, cfg.dataset.std)))[None].to(device)
    edge = model.infer_edge_dp(x)["edge"].float()
    seed = load_npz(seeds / f"{image_id}.npz")
    cams = torch.from_numpy(seed["cam"].astype(np.float32)).to(device)
    if tuple(cams.shape[1:]) != tuple(edge.shape[1:]):
        raise RecamInputError(
            f"recam: seed {seeds / image_id}.npz has a stride-4 map of {tuple(cams.shape[1:])}, "
            f"the image gives {tuple(edge.shape[1:])} - re-export the seeds"
        )
    rw = random_walk(cams, edge, beta=stage.beta, exp_times=stage.exp_times, radius=stage.radius)
    return {"image": image, "keys": seed["keys"].astype(np.int64), "rw": rw}


def walk_threshold(cfg: Config, model: torch.nn.Module, seeds, ids: list[str], device: torch.device) -> dict:
    """The GT-free background threshold of the walk, on the walks of the sample `ids` (the
    upsampled, max-normalised scores that `rw_to_label` thresholds)."""
    missing = [i for i in ids if not (seeds / f"{i}.npz").is_file()]
    if missing:
        raise RecamInputError(
            f"recam: the auto threshold's sample needs seeds of thresholds.split={cfg.thresholds.split}, "
            f"but {seeds} has no {missing[0]}.npz - export seeds for that split or change thresholds.split"
        )
    maps = []
    for image_id in progress(ids, desc="masks/irn auto threshold", unit="img", leave=False, disable=not is_main()):
        walk = walk_image(cfg, model, seeds, image_id, device)
        scores = upsample_walk(walk["rw"], walk["image"].shape[:2]).cpu().numpy()
        maps.append(ScoreMap(scores=scores, keys=walk["keys"], image=walk["image"]))
    return select(cfg.thresholds, maps, "masks/irn walk")


@torch.no_grad()
def walk_masks(
    cfg: Config, model: torch.nn.Module, seeds, out, ids: list[str], device: torch.device, threshold: float
) -> None:
    """masks/irn for `ids`: the walk of each image (`walk_image`), label PNG at `threshold` (+ npz)."""
    for image_id in progress(ids, desc="masks/irn", unit="img", dynamic_ncols=True, disable=not is_main()):
        walk = walk_image(cfg, model, seeds, image_id, device)
        image, rw = walk["image"], walk["rw"]
        if cfg.masks.save_scores:
            save_npz(
                out / f"{image_id}.npz",
                keys=walk["keys"],
                rw=rw.cpu().numpy(),
                size=np.asarray(image.shape[:2], dtype=np.int64),
            )
        label = rw_to_label(rw, walk["keys"], image.shape[:2], threshold)
        save_label_png(out / f"{image_id}.png", label.cpu().numpy())

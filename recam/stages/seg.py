"""Stage `seg`: train DeepLab on the pseudo masks of stage `masks` (seg.labels=pseudo) or on the
ground-truth masks (seg.labels=gt, the fully supervised upper bound), spec §7.1."""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from recam.config import Config
from recam.data.seg_dataset import SegTrainDataset, check_label_files
from recam.engine.checkpoint import check_class_names, load_checkpoint, load_model_state, save_checkpoint
from recam.engine.distributed import mean_over_ranks, per_rank_batch, rank, world_size
from recam.engine.iter_loop import StepBatchSampler, train_iterations
from recam.errors import RecamInputError
from recam.io import markdown_table
from recam.models.advcam import CAFFE_INPUT, PREFIX as ADVCAM_PREFIX
from recam.models.deeplab import MSC, build_seg_model, seg_param_groups
from recam.rundir import RunDir, config_slice
from recam.seg.losses import msc_loss
from recam.seg.optim import make_seg_sgd
from recam.stages.common import load_prepared, loader_generator, pretrained_weights, tensorboard_writer

LABELS = ("pseudo", "gt")
LOSSES = ("ce", "balanced")


def png_in(folder: Path, image_id: str) -> Path:
    return folder / f"{image_id}.png"


def seg_step(model: MSC, batch: dict, balanced: bool = False) -> dict[str, torch.Tensor]:
    # Under torchrun the pixel mean is taken over the global batch: the divisor is the mean count over the ranks.
    return {
        "loss": msc_loss(model(batch["image"]), batch["label"], count_over_ranks=mean_over_ranks, balanced=balanced)
    }


def input_norm(
    model_config: dict, dataset_mean: list[float], dataset_std: list[float]
) -> tuple[list[float], list[float]]:
    """(mean, std) of the network's input: the caffe convention (BGR mean on 0..255, no std; the
    BGR order is folded into the stem weights) for the AdvCAM layout, else the dataset's."""
    if model_config.get("layout") == "caffe":
        return CAFFE_INPUT["mean"], CAFFE_INPUT["std"]
    return list(dataset_mean), list(dataset_std)


def build_model(pretrained: str, model_config: dict, rundir: RunDir) -> MSC:
    """The network to train; pretrained=cam starts its backbone from the `cam` classifier's (the
    offline demo's stand-in for ImageNet weights, as irn.pretrained=cam)."""
    if pretrained != "cam":
        return build_seg_model(**model_config, pretrained=pretrained_weights(pretrained, rundir))
    source = rundir.require("cam") / "model.pt"
    model = build_seg_model(**model_config, pretrained="none")
    state = load_checkpoint(source)["model"]
    load_model_state(
        model.base.backbone,
        {key.removeprefix("backbone."): value for key, value in state.items() if key.startswith("backbone.")},
        source,
    )
    return model


def load_trained(path: Path, class_names: list[str]) -> MSC:
    """The network of a `seg` model.pt, built from its recorded settings and loaded strictly."""
    return load_trained_with_config(path, class_names)[0]


def load_trained_with_config(path: Path, class_names: list[str]) -> tuple[MSC, dict]:
    """(`load_trained`'s network, its recorded model_config)."""
    checkpoint = load_checkpoint(path)
    check_class_names(checkpoint, class_names, path)
    model = build_seg_model(**checkpoint["model_config"], pretrained="none")
    load_model_state(model, checkpoint["model"], path)
    return model, checkpoint["model_config"]


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, root = cfg.seg, cfg.dataset.root
    if stage.labels not in LABELS:
        raise RecamInputError(f"recam: seg.labels={stage.labels!r} - use one of {', '.join(LABELS)}")
    data = load_prepared(rundir, cfg.dataset)
    if stage.labels == "pseudo":
        ids, folder = data.ids(stage.split), rundir.require("masks", stage.masks)
    else:
        # VOC: SegmentationClass holds GT for train/val only; train_aug's is SBD's SegmentationClassAug.
        ids, folder = data.ids(stage.gt_split), Path(root) / stage.gt_folder
        if not folder.is_dir():
            raise RecamInputError(
                f"recam: seg.labels=gt needs {folder} (seg.gt_folder={stage.gt_folder}) - unpack the "
                "masks there or choose another seg.gt_folder / seg.gt_split"
            )
    num_labels = len(data.class_names) + 1
    if stage.loss not in LOSSES:
        raise RecamInputError(f"recam: seg.loss={stage.loss!r} - use one of {', '.join(LOSSES)}")
    model_config = {
        "name": stage.arch,
        "num_classes": num_labels,
        "output_stride": stage.output_stride,
        "fixed_bn": stage.fixed_bn,
        "msc_scales": list(stage.msc_scales),
        "layout": "caffe" if stage.pretrained.startswith(ADVCAM_PREFIX) else "torchvision",
    }
    mean, std = input_norm(model_config, cfg.dataset.mean, cfg.dataset.std)
    model = build_model(stage.pretrained, model_config, rundir)  # bad arch / weights: before any write
    per_rank_batch(stage.batch_size)  # the global micro-batch must split over the torchrun ranks
    out = rundir.stage_dir("seg", stage.labels)
    slice_ = config_slice(cfg, "dataset", "seg", "runtime.seed")
    slice_["seg"]["amp"] = amp = cfg.amp_for("seg")  # the resolved precision is what changes the outputs
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    if len(ids) < stage.batch_size:
        raise RecamInputError(f"recam: {len(ids)} training images, fewer than seg.batch_size={stage.batch_size}")
    label_path = functools.partial(png_in, folder)
    check_label_files(root, ids, label_path, num_labels, read=stage.check_labels)
    model = model.to(device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer, scheduler = make_seg_sgd(
        seg_param_groups(
            model,
            lr=stage.lr,
            weight_decay=stage.weight_decay,
            head_lr_mult=stage.head_lr_mult,
            head_bias_lr_mult=stage.head_bias_lr_mult,
        ),
        momentum=stage.momentum,
        max_step=stage.iterations,
        power=stage.poly_power,
        every=stage.lr_decay_every,
    )
    dataset = SegTrainDataset(
        root,
        ids,
        label_path,
        num_labels=num_labels,
        crop_size=stage.crop_size,
        scales=stage.scales,
        mean=mean,
        std=std,
        seed=cfg.runtime.seed,
    )

    def batches(start: int) -> DataLoader:
        sampler = StepBatchSampler(
            len(dataset),
            stage.batch_size,
            seed=cfg.runtime.seed,
            start=start,
            total=stage.iterations * stage.iter_size,
            num_replicas=world_size(),
            rank=rank(),
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            num_workers=cfg.runtime.num_workers,
            pin_memory=device.type == "cuda",
            generator=loader_generator(cfg.runtime.seed + start),
        )

    extra = {"config": slice_, "class_names": data.class_names, "model_config": model_config}
    trained = train_iterations(
        model=model,
        batches=batches,
        step_fn=functools.partial(seg_step, balanced=stage.loss == "balanced"),
        optimizer=optimizer,
        scheduler=scheduler,
        iterations=stage.iterations,
        iter_size=stage.iter_size,
        device=device,
        checkpoint_dir=out / "checkpoints",
        checkpoint_extra=extra,
        checkpoint_every=stage.checkpoint_every,
        amp=amp,
        channels_last=cfg.runtime.channels_last,
        grad_clip=stage.grad_clip,
        desc=f"seg/{stage.labels}",
        log_every=stage.log_every,
        writer=tensorboard_writer(out),
        compile_model=cfg.runtime.compile,
    )
    save_checkpoint(out / "model.pt", {"model": model.state_dict(), **extra})
    results = {
        "labels": stage.labels,
        "masks": stage.masks if stage.labels == "pseudo" else None,
        "images": len(ids),
        **trained,
    }
    table = (
        f"# seg/{stage.labels}: {stage.arch}, {stage.iterations} iterations on {len(ids)} images\n\n"
        + markdown_table(
            ["iteration", "loss", "lr", "images/s"],
            [[h["iteration"], h["loss"], h["lr"], h["images_per_s"]] for h in trained["history"]],
        )
    )
    rundir.finish(out, slice_, results, table)
    return results

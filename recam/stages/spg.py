"""Stage `spg`: SPG training (spg-spec.md §6) on the prepared train list; validation mAP per epoch.

The reference recipe: SGD with Nesterov momentum 0.9, weight decay 5e-4 on every parameter,
weights at lr and biases at 2 lr (new layers x spg.new_layer_lr_mult, 1 in the code), a constant
rate (spg.decay_points multiply by 0.1), BN in train mode, the loss of spec §5. Checkpoints,
resume and progress come from engine/loop.py, as in `cam`.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR

from recam.config import Config, SpgStage
from recam.data.voc12 import image_path
from recam.data.wsol import SPGDataset
from recam.engine.checkpoint import save_checkpoint
from recam.engine.evaluate import evaluate_classifier
from recam.engine.loop import steps_per_epoch, train_epochs
from recam.errors import RecamInputError
from recam.io import markdown_table
from recam.masks.guidance import spg_loss
from recam.models.spg import SPGNet, build_spg, param_groups
from recam.rundir import RunDir, config_slice
from recam.stages.common import (
    Prepared,
    eval_loader,
    load_prepared,
    pretrained_weights,
    tensorboard_writer,
    train_loader,
)

LOSS_PARTS = ("loss", "cls", "side4", "side3", "back")


def spg_net_from_config(stage: SpgStage, num_classes: int, *, pretrained: str | None = None) -> SPGNet:
    return build_spg(
        arch=stage.arch,
        num_classes=num_classes,
        pretrained=stage.pretrained if pretrained is None else pretrained,
        dropout=stage.dropout,
        head_channels=stage.head_channels,
        side_channels=stage.side_channels,
        output_stride=stage.output_stride,
        fixed_bn=stage.fixed_bn,
    )


def decay_factor(decay_points: list[int], steps: int):
    """lr multiplier per optimizer step: 0.1 ** (number of decay epochs already started)."""
    return lambda step: 0.1 ** sum(step >= (point - 1) * steps for point in decay_points)


def spg_dataset(cfg: Config, data: Prepared, split: str, train: bool) -> SPGDataset:
    # images without any class have no attention map and no CE target: left out of training
    ids = [i for i in data.ids(split) if data.labels[i].any()] if train else data.ids(split)
    if not ids:
        raise RecamInputError(f"recam: split {split} has no image with a class label - spg needs labelled images")
    stage = cfg.spg
    return SPGDataset(
        [image_path(cfg.dataset.root, i) for i in ids],
        ids,
        [data.labels[i] for i in ids],
        train=train,
        resize=stage.resize_short,
        crop=stage.crop_size,
        mean=cfg.dataset.mean,
        std=cfg.dataset.std,
        seed=cfg.runtime.seed,
    )


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.spg
    out = rundir.stage_dir("spg")
    data = load_prepared(rundir, cfg.dataset)
    weights = pretrained_weights(stage.pretrained, rundir)  # synthetic: requires the pretrain stage
    slice_ = config_slice(cfg, "dataset", "spg", "runtime.seed")
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    if not 0.0 <= stage.dropout < 1.0:
        raise RecamInputError(f"recam: spg.dropout={stage.dropout} is outside [0, 1)")
    loader = train_loader(spg_dataset(cfg, data, cfg.dataset.train_list, True), stage.batch_size, cfg.runtime, device)
    val = eval_loader(spg_dataset(cfg, data, cfg.dataset.val_list, False), stage.batch_size, cfg.runtime, device)
    model = spg_net_from_config(stage, len(data.class_names), pretrained=weights).to(device)
    steps = steps_per_epoch(len(loader), stage.max_steps)
    groups = param_groups(
        model.named_parameters(),
        lr=stage.lr,
        weight_decay=stage.weight_decay,
        new_layer_lr_mult=stage.new_layer_lr_mult,
    )
    optimizer = torch.optim.SGD(
        groups, lr=stage.lr, momentum=stage.momentum, nesterov=True, weight_decay=stage.weight_decay
    )
    scheduler = LambdaLR(optimizer, lr_lambda=decay_factor(list(stage.decay_points), steps))

    def step(net: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        parts = spg_loss(
            {k: v.float() for k, v in net(batch["image"]).items()},
            batch["label"],
            size=stage.mask_size,
            align_corners=stage.align_corners,
            carry_threshold=stage.carry_threshold,
        )
        return {k: parts[k] for k in LOSS_PARTS}

    extra = {"config": slice_, "class_names": data.class_names, "arch": stage.arch}
    history = train_epochs(
        model=model,
        loader=loader,
        step_fn=step,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=stage.epochs,
        device=device,
        checkpoint_dir=out / "checkpoints",
        checkpoint_extra=extra,
        validate=lambda m: evaluate_classifier(m, val, device, stage.val_batches),
        max_steps=stage.max_steps,
        amp=cfg.runtime.amp,
        grad_clip=stage.grad_clip,
        desc="spg",
        log_every=stage.log_every,
        writer=tensorboard_writer(out),
        keep_epochs=stage.keep_epochs,
    )
    save_checkpoint(out / "model.pt", {"model": model.state_dict(), **extra})
    final = history[-1]
    results = {
        "val_map": final["val_map"],
        "val_loss": final["val_loss"],
        "images_per_s": final["images_per_s"],
        "train_images": len(loader.dataset),
        "val_images": len(val.dataset),
        "steps_per_epoch": steps,
        "history": history,
    }
    table = "# spg: SPG training\n\n" + markdown_table(
        ["epoch", "loss", "CE", "B2", "B1", "C", "val mAP", "images/s"],
        [
            [
                h["epoch"],
                h["train_loss"],
                h["train_cls"],
                h["train_side4"],
                h["train_side3"],
                h["train_back"],
                h["val_map"],
                h["images_per_s"],
            ]
            for h in history
        ],
    )
    rundir.finish(out, slice_, results, table)
    return results

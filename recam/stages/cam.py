"""Stage `cam`: the ResNet CAM classifier trained with multilabel soft-margin loss (spec §2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recam.config import Config
from recam.engine.checkpoint import save_checkpoint
from recam.engine.evaluate import evaluate_classifier
from recam.engine.loop import steps_per_epoch, train_epochs
from recam.engine.optim import make_poly_sgd
from recam.io import markdown_table
from recam.rundir import RunDir, config_slice
from recam.stages.common import (
    cam_net_from_config,
    classifier_loaders,
    load_prepared,
    pretrained_weights,
    tensorboard_writer,
)


def bce_step(model: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
    logits = model(batch["image"])["logits"]
    return {"loss": F.multilabel_soft_margin_loss(logits.float(), batch["label"])}


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.cam
    out = rundir.stage_dir("cam")
    data = load_prepared(rundir, cfg.dataset)
    weights = pretrained_weights(cfg.model.pretrained, rundir)  # synthetic: requires the pretrain stage
    slice_ = config_slice(cfg, "dataset", "model", "cam", "runtime.seed")
    slice_["cam"]["amp"] = amp = cfg.amp_for("cam")  # the resolved precision is what changes the outputs
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    loader, val = classifier_loaders(cfg, data, stage, device)
    model = cam_net_from_config(cfg.model, len(data.class_names), pretrained=weights).to(device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    max_step = stage.epochs * steps_per_epoch(len(loader), stage.max_steps)
    optimizer, scheduler = make_poly_sgd(
        model.param_groups(lr=stage.lr, head_lr_mult=stage.head_lr_mult, weight_decay=stage.weight_decay),
        momentum=stage.momentum,
        max_step=max_step,
        power=stage.poly_power,
    )
    extra = {"config": slice_, "class_names": data.class_names}
    history = train_epochs(
        model=model,
        loader=loader,
        step_fn=bce_step,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=stage.epochs,
        device=device,
        checkpoint_dir=out / "checkpoints",
        checkpoint_extra=extra,
        validate=lambda m: evaluate_classifier(m, val, device, stage.val_batches),
        max_steps=stage.max_steps,
        amp=amp,
        grad_clip=stage.grad_clip,
        desc="cam",
        log_every=stage.log_every,
        writer=tensorboard_writer(out),
        keep_epochs=stage.keep_epochs,
        compile_model=cfg.runtime.compile,
    )
    save_checkpoint(out / "model.pt", {"model": model.state_dict(), **extra})
    final = history[-1]
    results = {
        "val_map": final["val_map"],
        "val_loss": final["val_loss"],
        "images_per_s": final["images_per_s"],
        "train_images": len(loader.dataset),
        "val_images": len(val.dataset),
        "max_step": max_step,
        "history": history,
    }
    table = "# cam: classifier training\n\n" + markdown_table(
        ["epoch", "train loss", "val loss", "val mAP", "images/s"],
        [[h["epoch"], h["train_loss"], h["val_loss"], h["val_map"], h["images_per_s"]] for h in history],
    )
    rundir.finish(out, slice_, results, table)
    return results

"""Stage `recam`: fine-tune the `cam` classifier with the ReCAM head, L = BCE + lambda * SCE (spec §3)."""

from __future__ import annotations

import torch

from recam.config import Config
from recam.engine.checkpoint import check_class_names, load_checkpoint, load_model_state, save_checkpoint
from recam.engine.evaluate import evaluate_classifier
from recam.engine.loop import steps_per_epoch, train_epochs
from recam.engine.optim import make_poly_sgd
from recam.io import markdown_table
from recam.models.recam_net import RecamNet
from recam.rundir import RunDir, config_slice
from recam.stages.common import cam_net_from_config, classifier_loaders, load_prepared, tensorboard_writer


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.recam
    out = rundir.stage_dir("recam")
    data = load_prepared(rundir, cfg.dataset)
    cam_dir = rundir.require("cam")
    slice_ = config_slice(cfg, "dataset", "model", "recam", "runtime.seed")
    slice_["recam"]["amp"] = amp = cfg.amp_for("recam")  # the resolved precision is what changes the outputs
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    loader, val = classifier_loaders(cfg, data, stage, device)
    # The stage-1 weights, loaded strictly; no ImageNet file is needed since they replace all of them.
    cam_net = cam_net_from_config(cfg.model, len(data.class_names), pretrained="none")
    checkpoint = load_checkpoint(cam_dir / "model.pt")
    check_class_names(checkpoint, data.class_names, cam_dir / "model.pt")
    load_model_state(cam_net, checkpoint["model"], cam_dir / "model.pt")
    model = RecamNet(cam_net).to(device)
    if cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    max_step = stage.epochs * steps_per_epoch(len(loader), stage.max_steps)
    optimizer, scheduler = make_poly_sgd(
        model.param_groups(lr=stage.lr, backbone_lr_mult=stage.backbone_lr_mult, weight_decay=stage.weight_decay),
        momentum=stage.momentum,
        max_step=max_step,
        power=stage.poly_power,
    )

    def step(net: RecamNet, batch: dict) -> dict[str, torch.Tensor]:
        parts = net(batch["image"], batch["label"])
        return {"loss": parts["bce"] + stage.loss_weight * parts["sce"], **parts}

    extra = {"config": slice_, "class_names": data.class_names}
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
        validate=lambda m: evaluate_classifier(m.cam_net, val, device, stage.val_batches),
        max_steps=stage.max_steps,
        amp=amp,
        grad_clip=stage.grad_clip,
        desc="recam",
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
        "loss_weight": stage.loss_weight,
        "max_step": max_step,
        "history": history,
    }
    table = "# recam: ReCAM training\n\n" + markdown_table(
        ["epoch", "train loss", "bce", "sce", "sce acc", "val loss", "val mAP", "images/s"],
        [
            [
                h["epoch"],
                h["train_loss"],
                h["train_bce"],
                h["train_sce"],
                h["train_acc"],
                h["val_loss"],
                h["val_map"],
                h["images_per_s"],
            ]
            for h in history
        ],
    )
    rundir.finish(out, slice_, results, table)
    return results

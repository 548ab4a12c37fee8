"""Stage `irn`: train the inter-pixel relation network on the IR labels (spec §6b).

A frozen backbone (fresh ImageNet ResNet-50 in the reference; `irn.pretrained=cam` reuses the
`cam` stage's backbone, which the offline demo does since it has no ImageNet weights) with the
boundary and displacement heads trained on pair labels from the IR labels. Validation: the same
losses against pair labels made from the ground-truth masks of `irn.val_split` (the reference
has no validation). After training the mean displacement over the training list is stored in the
network (instance segmentation uses it; the semantic masks do not).
"""

from __future__ import annotations

import functools

import torch
from recam.engine.progress import progress

from recam.config import Config, IrnStage
from recam.data.affinity_dataset import AffinityDataset
from recam.data.voc12 import load_gt
from recam.engine.checkpoint import load_checkpoint, load_model_state, save_checkpoint
from recam.engine.distributed import is_distributed, is_main, mean_over_ranks
from recam.engine.loop import autocast, steps_per_epoch, train_epochs
from recam.engine.optim import make_poly_sgd
from recam.io import load_label_png, markdown_table
from recam.masks.affinity import affinity_labels_torch, path_indices_to_torch
from recam.masks.irn_losses import irn_losses, mean_displacement
from recam.masks.path_index import build_path_index
from recam.models.irn import IRNet, build_irn
from recam.rundir import RunDir, config_slice
from recam.stages.common import eval_loader, load_prepared, pretrained_weights, tensorboard_writer, train_loader

LOSS_PARTS = ("pos_aff_loss", "neg_aff_loss", "dp_fg_loss", "dp_bg_loss")
PAIR_LABELS = ("bg_pos", "fg_pos", "neg")


def _ir_label(folder, image_id: str):
    return load_label_png(folder / f"{image_id}.png")


def build_irn_from_config(stage: IrnStage, rundir: RunDir) -> IRNet:
    """The IRN of `irn.arch`; with pretrained=cam its frozen backbone is the `cam` classifier's."""
    if stage.pretrained != "cam":
        return build_irn(arch=stage.arch, pretrained=pretrained_weights(stage.pretrained, rundir))
    source = rundir.require("cam") / "model.pt"
    model = build_irn(arch=stage.arch, pretrained="none")
    state = load_checkpoint(source)["model"]
    load_model_state(
        model.backbone, {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}, source
    )
    return model


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage, data_cfg = cfg.irn, cfg.dataset
    data = load_prepared(rundir, data_cfg)
    labels_dir = rundir.require("ir_labels")
    model = build_irn_from_config(stage, rundir)  # may require("cam"): before rundir.begin
    out = rundir.stage_dir("irn")
    slice_ = config_slice(cfg, "dataset", "irn", "runtime.seed")
    slice_["irn"]["amp"] = cfg.amp_for("irn")  # the resolved precision is what changes the outputs
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    common = dict(
        crop_size=stage.crop_size,
        scale_range=stage.scale_range,
        mean=data_cfg.mean,
        std=data_cfg.std,
        seed=cfg.runtime.seed,
    )
    loader = train_loader(
        AffinityDataset(
            data_cfg.root, data.ids(stage.split), functools.partial(_ir_label, labels_dir), train=True, **common
        ),
        stage.batch_size,
        cfg.runtime,
        device,
    )
    val = None
    if stage.val_split:
        val = eval_loader(
            AffinityDataset(
                data_cfg.root,
                data.ids(stage.val_split),
                functools.partial(load_gt, data_cfg.root, num_classes=len(data.class_names)),
                train=False,
                **common,
            ),
            stage.batch_size,
            cfg.runtime,
            device,
        )
    model = model.to(device)
    path_index = build_path_index(stage.radius, (stage.crop_size // 4, stage.crop_size // 4))
    paths = path_indices_to_torch(path_index, device)
    src = torch.as_tensor(path_index.src_indices, device=device)
    dst = torch.as_tensor(path_index.dst_indices, device=device)

    def step(net: IRNet, batch: dict) -> dict[str, torch.Tensor]:
        out_ = net(batch["image"])
        pairs = affinity_labels_torch(batch["label"], src, dst)
        # torchrun: normalise by the label counts of the whole global batch (irn_losses `counts`)
        counts = {k: mean_over_ranks(pairs[k].float().sum()) for k in PAIR_LABELS} if is_distributed() else None
        losses = irn_losses(
            out_["edge_logits"].float(),
            out_["dp"].float(),
            pairs["bg_pos"],
            pairs["fg_pos"],
            pairs["neg"],
            path_index,
            path_indices=paths,
            counts=counts,
        )
        return {"loss": losses["total"], **{k: losses[k] for k in LOSS_PARTS}}

    def validate(net: IRNet) -> dict:
        if val is None:
            return {}
        sums, count = {}, 0
        for index, batch in enumerate(val):
            if stage.val_batches is not None and index >= stage.val_batches:
                break
            parts = step(net, {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in batch.items()})
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value) * len(batch["id"])
            count += len(batch["id"])
        return {k: v / max(count, 1) for k, v in sums.items()}

    max_step = stage.epochs * steps_per_epoch(len(loader), stage.max_steps)
    optimizer, scheduler = make_poly_sgd(
        model.param_groups(stage.lr, stage.weight_decay, stage.dp_lr_mult),
        momentum=stage.momentum,
        max_step=max_step,
        power=stage.poly_power,
    )
    extra = {"config": slice_, "arch": stage.arch}
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
        validate=validate,
        max_steps=stage.max_steps,
        amp=cfg.amp_for("irn"),
        grad_clip=stage.grad_clip,
        desc="irn",
        log_every=stage.log_every,
        writer=tensorboard_writer(out),
        keep_epochs=stage.keep_epochs,
        compile_model=cfg.runtime.compile,
    )
    model.set_mean_shift(measure_mean_shift(model, cfg, data.ids(stage.split), labels_dir, device))
    save_checkpoint(out / "model.pt", {"model": model.state_dict(), **extra})
    final = history[-1]
    results = {
        "train_loss": final["train_loss"],
        "val_loss": final.get("val_loss"),
        "max_step": max_step,
        "images_per_s": final["images_per_s"],
        "mean_shift": model.mean_shift.running_mean.tolist(),
        "history": history,
    }
    keys = ["train_loss", *[f"train_{k}" for k in LOSS_PARTS[:2]], "val_loss", *[f"val_{k}" for k in LOSS_PARTS[:2]]]
    table = "# irn: inter-pixel relation network\n\n" + markdown_table(
        ["epoch", *keys, "images/s"], [[h["epoch"], *[h.get(k, "-") for k in keys], h["images_per_s"]] for h in history]
    )
    rundir.finish(out, slice_, results, table)
    return results


@torch.no_grad()
def measure_mean_shift(model: IRNet, cfg: Config, ids: list[str], labels_dir, device: torch.device) -> torch.Tensor:
    """Mean displacement over the training list, top-left crops, eval mode (spec §6b "After training")."""
    stage = cfg.irn
    dataset = AffinityDataset(
        cfg.dataset.root,
        ids,
        functools.partial(_ir_label, labels_dir),
        train=False,
        crop_size=stage.crop_size,
        scale_range=stage.scale_range,
        mean=cfg.dataset.mean,
        std=cfg.dataset.std,
    )
    loader = eval_loader(dataset, stage.batch_size, cfg.runtime, device)
    model.eval()
    means = []
    total = len(loader) if stage.mean_shift_batches is None else min(len(loader), stage.mean_shift_batches)
    model.set_mean_shift(torch.zeros(2))
    bar = progress(loader, total=total, desc="irn mean shift", leave=False, disable=not is_main())
    for index, batch in enumerate(bar):
        if index >= total:
            break
        with autocast(device, cfg.amp_for("irn")):
            means.append(mean_displacement(model(batch["image"].to(device))["dp"].float()))
    return torch.stack(means).mean(dim=0).cpu()

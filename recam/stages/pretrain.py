"""Stage `pretrain`: a backbone for the miniature world, as ImageNet is for VOC (issue 12).

A torchvision ResNet (standard stride 32, trainable BN, its own `fc`) learns the single-label
synthetic classification set of `recam/data/pretrain_world.py` with cross-entropy (label
smoothing), SGD momentum 0.9 and a poly decay: a standard ImageNet-style recipe. The backbone
(`fc.*` left out) is written once to `<pretrain.cache_dir>/<arch>-<key>/backbone.pth`, the key a
hash of the settings (`cache_folder`), and every experiment whose `model.pretrained`,
`irn.pretrained`, `seg.pretrained` or `spg.pretrained` is `synthetic` loads that file through the
same strict loader as an ImageNet file. The images are rendered into memory at the start (a few
seconds per thousand); no image is cached, only the weights. Resume: `checkpoints/last.pt` per epoch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from recam.config import IMAGENET_MEAN, IMAGENET_STD, Config
from recam.data.pretrain_world import VERSION, describe, fingerprint, render_split
from recam.engine.checkpoint import save_checkpoint
from recam.engine.loop import train_epochs
from recam.engine.optim import make_poly_sgd
from recam.engine.progress import progress
from recam.io import markdown_table, write_json
from recam.models.backbone import RESNET_BUILDERS
from recam.rundir import RunDir, stage_key
from recam.stages.common import loader_generator, train_loader

log = logging.getLogger(__name__)
NOT_IN_KEY = ("cache_dir", "workers", "log_every", "channels_last")  # settings that do not change the weights


def pretrain_slice(cfg: Config) -> dict:
    """What the cached weights depend on: every pretrain setting but NOT_IN_KEY, the resolved
    precision and the world's drawing version."""
    values = {k: v for k, v in dataclasses.asdict(cfg.pretrain).items() if k not in NOT_IN_KEY}
    values["amp"] = cfg.amp_for("pretrain")
    return {"pretrain": values, "world": VERSION}


def cache_folder(cfg: Config) -> Path:
    """`<cache_dir>/<arch>-<key>`: one folder per distinct pretraining, shared by every experiment."""
    return Path(cfg.pretrain.cache_dir) / f"{cfg.pretrain.arch}-{stage_key(pretrain_slice(cfg), {})}"


class PretrainImages(Dataset):
    """In-memory uint8 images (N, S, S, 3); training items get a random crop of the reflect-padded
    image and a horizontal flip drawn from `default_rng([seed, epoch, index])`, so the order and
    the augmentation of an epoch depend on (seed, epoch) only (a resumed run repeats them)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, train: bool, pad: int, seed: int):
        self.images, self.labels, self.train, self.pad, self.seed = images, labels, train, pad, seed
        self.epoch = 0
        self.mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1) * 255
        self.std = torch.tensor(IMAGENET_STD).view(3, 1, 1) * 255

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> dict:
        image = self.images[index]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            size = image.shape[0]
            padded = np.pad(image, ((self.pad, self.pad), (self.pad, self.pad), (0, 0)), mode="reflect")
            y, x = (int(v) for v in rng.integers(0, 2 * self.pad + 1, 2))
            image = padded[y : y + size, x : x + size]
            if rng.random() < 0.5:
                image = image[:, ::-1]
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()
        return {"image": (tensor - self.mean) / self.std, "label": int(self.labels[index]), "id": str(index)}


def build_classifier(arch: str, num_classes: int) -> torch.nn.Module:
    """The pretraining network: a plain torchvision ResNet (trainable BN, stride 32) with `fc`."""
    return RESNET_BUILDERS[arch](weights=None, num_classes=num_classes)


def state_fingerprint(module: torch.nn.Module) -> str:
    """sha256 (16 hex) of a module's parameters and buffers in state_dict order (float32 bytes)."""
    digest = hashlib.sha256()
    for name, value in module.state_dict().items():
        digest.update(name.encode())
        digest.update(value.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def _render(cfg: Config, split: str, count: int) -> tuple[np.ndarray, np.ndarray]:
    stage = cfg.pretrain
    workers = stage.workers or min(os.cpu_count() or 1, 8)
    bar = progress(total=count, desc=f"pretrain: render {split}", leave=False, dynamic_ncols=True)
    try:
        return render_split(stage.seed, split, count, stage.num_classes, stage.image_size, workers, bar.update)
    finally:
        bar.close()


def run(cfg: Config, rundir: RunDir, device: torch.device) -> dict:
    stage = cfg.pretrain
    out = rundir.stage_dir("pretrain")
    slice_ = pretrain_slice(cfg)
    out, done = rundir.begin(out, slice_, cfg.run.force)
    if done is not None:
        return done
    torch.manual_seed(stage.seed)  # the weights depend on pretrain.seed, not on the experiment's runtime.seed
    train_images, train_labels = _render(cfg, "train", stage.num_classes * stage.images_per_class)
    val_images, val_labels = _render(cfg, "val", stage.num_classes * stage.val_per_class)
    train_set = PretrainImages(train_images, train_labels, train=True, pad=stage.pad, seed=stage.seed)
    val_set = PretrainImages(val_images, val_labels, train=False, pad=0, seed=stage.seed)
    runtime = dataclasses.replace(cfg.runtime, num_workers=0, seed=stage.seed)  # in memory: no workers needed
    loader = train_loader(train_set, stage.batch_size, runtime, device)
    val = DataLoader(val_set, batch_size=256, shuffle=False, generator=loader_generator(stage.seed))
    model = build_classifier(stage.arch, stage.num_classes).to(device)
    # What a cross-machine comparison needs to tell the world, the start and the training apart.
    fingerprints = {
        "train_images": fingerprint(train_images, train_labels),
        "val_images": fingerprint(val_images, val_labels),
        "init_weights": state_fingerprint(model),
    }
    if stage.channels_last or cfg.runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    decay, no_decay = [], []
    for param in model.parameters():
        (no_decay if param.ndim == 1 else decay).append(param)  # no weight decay on BN and biases
    max_step = stage.epochs * len(loader)
    optimizer, scheduler = make_poly_sgd(
        [
            {"params": decay, "lr": stage.lr, "weight_decay": stage.weight_decay},
            {"params": no_decay, "lr": stage.lr, "weight_decay": 0.0},
        ],
        momentum=stage.momentum,
        max_step=max_step,
        power=stage.poly_power,
    )

    def step(net: torch.nn.Module, batch: dict) -> dict[str, torch.Tensor]:
        logits = net(batch["image"])
        loss = F.cross_entropy(logits.float(), batch["label"], label_smoothing=stage.label_smoothing)
        return {"loss": loss, "top1": (logits.argmax(1) == batch["label"]).float().mean()}

    def validate(net: torch.nn.Module) -> dict[str, float]:
        correct = seen = 0
        loss_sum = 0.0
        for batch in val:
            logits = net(batch["image"].to(device)).float()
            label = batch["label"].to(device)
            loss_sum += F.cross_entropy(logits, label, reduction="sum").item()
            correct += int((logits.argmax(1) == label).sum())
            seen += len(label)
        return {"loss": loss_sum / seen, "top1": correct / seen}

    extra = {"config": slice_}
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
        amp=cfg.amp_for("pretrain"),
        desc="pretrain",
        log_every=stage.log_every,
    )
    backbone = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith("fc.")}
    save_checkpoint(out / "backbone.pth", backbone)
    write_json(out / "classes.json", describe(stage.num_classes, stage.seed))
    final = history[-1]
    results = {
        "val_top1": final["val_top1"],
        "val_loss": final["val_loss"],
        "train_top1": final["train_top1"],
        "images_per_s": final["images_per_s"],
        "train_images": len(train_set),
        "val_images": len(val_set),
        "num_classes": stage.num_classes,
        "max_step": max_step,
        "seconds": round(sum(h["seconds"] for h in history), 1),
        "fingerprints": {**fingerprints, "backbone": state_fingerprint(model)},
        "history": history,
    }
    table = "# pretrain: the miniature world's ImageNet\n\n" + markdown_table(
        ["epoch", "train loss", "train top-1", "val loss", "val top-1", "images/s"],
        [
            [h["epoch"], h["train_loss"], h["train_top1"], h["val_loss"], h["val_top1"], h["images_per_s"]]
            for h in history
        ],
    )
    rundir.finish(out, slice_, results, table)
    return results

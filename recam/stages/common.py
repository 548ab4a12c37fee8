"""Small helpers the stage files share: reading the `prepare` artifacts, building loaders."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from recam.config import Config, DatasetConfig, ModelConfig, RuntimeConfig, TrainStage
from recam.data.datasets import ClassificationDataset
from recam.data.splits import load_cls_labels
from recam.data.voc12 import read_id_list
from recam.engine.distributed import is_main, per_rank_batch, rank, world_size
from recam.errors import RecamInputError
from recam.models.cam_net import CamNet, build_cam_net
from recam.rundir import RunDir, config_slice

log = logging.getLogger(__name__)


@dataclass
class Prepared:
    """The outputs of `prepare`: id lists, image-level labels, class names."""

    folder: Path
    labels: dict[str, np.ndarray]
    class_names: list[str]
    max_images: int | None = None

    def ids(self, split: str) -> list[str]:
        path = self.folder / f"{split}.txt"
        if not path.is_file():
            available = sorted(p.stem for p in self.folder.glob("*.txt") if p.stem != "class_names")
            raise RecamInputError(
                f"recam: split {split!r} was not prepared ({path} missing); available: {', '.join(available)}"
            )
        ids = read_id_list(path)
        return ids[: self.max_images] if self.max_images else ids


def load_prepared(rundir: RunDir, dataset: DatasetConfig) -> Prepared:
    folder = rundir.require("prepare")
    class_names = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]
    labels = load_cls_labels(folder / "cls_labels.npz", num_classes=len(class_names))
    return Prepared(folder, labels, class_names, dataset.max_images)


def train_loader(dataset: Dataset, batch_size: int, runtime: RuntimeConfig, device: torch.device) -> DataLoader:
    """Shuffled, drop_last loader; the order depends on (seed, epoch) only (sampler.set_epoch).

    `batch_size` is the global batch: under torchrun each of N ranks loads batch_size / N of it
    (rank r takes every N-th image of the shuffled order), so step t covers the same images as
    one process with the whole batch.
    """
    if len(dataset) < batch_size:
        raise RecamInputError(
            f"recam: the training list has {len(dataset)} images, fewer than one batch "
            f"of {batch_size} (drop_last) - lower the batch size or add images"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=world_size(), rank=rank(), shuffle=True, seed=runtime.seed, drop_last=True
    )
    return DataLoader(
        dataset,
        batch_size=per_rank_batch(batch_size),
        sampler=sampler,
        drop_last=True,
        num_workers=runtime.num_workers,
        pin_memory=device.type == "cuda",
        persistent_workers=False,
        generator=loader_generator(runtime.seed),
    )


def loader_generator(seed: int) -> torch.Generator:
    """The DataLoader's own generator: its worker seeds come from here, not from torch's global
    RNG, so creating a loader draws nothing from the global stream and a resumed run (whose global
    RNG is restored from the checkpoint) continues exactly where the interrupted one was."""
    return torch.Generator().manual_seed(seed)


def eval_loader(
    dataset: Dataset, batch_size: int, runtime: RuntimeConfig, device: torch.device, drop_last: bool = False
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        drop_last=drop_last,
        num_workers=runtime.num_workers,
        pin_memory=device.type == "cuda",
        generator=loader_generator(runtime.seed),
    )


def classifier_loaders(
    cfg: Config, data: Prepared, stage: TrainStage, device: torch.device
) -> tuple[DataLoader, DataLoader]:
    """(train, val) loaders of the classifier stages: dataset.train_list with the random
    augmentation of spec §1.6, dataset.val_list with the top-left crop."""
    common = dict(
        crop_size=stage.crop_size,
        resize_long=stage.resize_long,
        mean=cfg.dataset.mean,
        std=cfg.dataset.std,
        seed=cfg.runtime.seed,
    )
    root = cfg.dataset.root
    train_set = ClassificationDataset(root, data.ids(cfg.dataset.train_list), data.labels, train=True, **common)
    val_set = ClassificationDataset(root, data.ids(cfg.dataset.val_list), data.labels, train=False, **common)
    return (
        train_loader(train_set, stage.batch_size, cfg.runtime, device),
        eval_loader(val_set, stage.batch_size, cfg.runtime, device),
    )


SYNTHETIC = "synthetic"  # *.pretrained=synthetic: the pretrain stage's cached backbone


def pretrained_weights(value: str, rundir: RunDir) -> str:
    """`value` as the model builders take it: for "synthetic", the `pretrain` stage's cached
    backbone file (which must be finished; `require` makes it an input of the calling stage, so a
    new pretraining re-runs it), else `value` unchanged. Call it before `rundir.begin`."""
    return str(rundir.require("pretrain") / "backbone.pth") if value == SYNTHETIC else value


def cam_net_from_config(model: ModelConfig, num_classes: int, *, pretrained: str | None = None) -> CamNet:
    """The CAM network of `model`; `pretrained` overrides model.pretrained ("none" when a
    checkpoint replaces every weight anyway, so no ImageNet file is needed)."""
    return build_cam_net(
        arch=model.arch,
        num_classes=num_classes,
        output_stride=model.output_stride,
        fixed_bn=model.fixed_bn,
        pretrained=model.pretrained if pretrained is None else pretrained,
        freeze_upto=model.freeze_upto,
    )


def tensorboard_writer(folder: Path):
    """A TensorBoard SummaryWriter in `folder/tb`; None on ranks other than 0 or without tensorboard."""
    if not is_main():
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no training curves are written")
        return None
    return SummaryWriter(log_dir=str(folder / "tb"))


__all__ = [
    "Prepared",
    "load_prepared",
    "train_loader",
    "eval_loader",
    "loader_generator",
    "config_slice",
    "classifier_loaders",
    "cam_net_from_config",
    "tensorboard_writer",
]

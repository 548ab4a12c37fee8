"""Small helpers the stage files share: reading the `prepare` artifacts, building loaders."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from recam.config import DatasetConfig, RuntimeConfig
from recam.data.splits import load_cls_labels
from recam.data.voc12 import read_id_list
from recam.errors import RecamInputError
from recam.pipeline import RunDir, config_slice, is_up_to_date
from recam.io import read_json

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
            raise RecamInputError(f"recam: split {split!r} was not prepared ({path} missing); "
                                  f"available: {', '.join(available)}")
        ids = read_id_list(path)
        return ids[: self.max_images] if self.max_images else ids


def load_prepared(rundir: RunDir, dataset: DatasetConfig) -> Prepared:
    folder = rundir.require("prepare")
    class_names = [line.strip() for line in (folder / "class_names.txt").read_text().splitlines() if line.strip()]
    labels = load_cls_labels(folder / "cls_labels.npz", num_classes=len(class_names))
    return Prepared(folder, labels, class_names, dataset.max_images)


def skip_if_done(rundir: RunDir, out: Path, slice_: dict, force: bool) -> dict | None:
    """Results of an up-to-date earlier run of this stage (same config and inputs), else None."""
    if not force and is_up_to_date(out, slice_):
        log.info("%s is up to date (same config and inputs) - skipping; run.force=true re-runs it", out)
        return read_json(out / "results.json") if (out / "results.json").is_file() else {}
    if (out / "DONE").is_file():
        (out / "DONE").unlink()  # the config or the inputs changed: this folder is stale now
    return None


def train_loader(dataset: Dataset, batch_size: int, runtime: RuntimeConfig, device: torch.device) -> DataLoader:
    """Shuffled, drop_last loader; the order depends on (seed, epoch) only (sampler.set_epoch)."""
    if len(dataset) < batch_size:
        raise RecamInputError(f"recam: the training list has {len(dataset)} images, fewer than one batch "
                              f"of {batch_size} (drop_last) - lower the batch size or add images")
    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True, seed=runtime.seed, drop_last=True)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=True,
                      num_workers=runtime.num_workers, pin_memory=device.type == "cuda",
                      persistent_workers=False)


def eval_loader(dataset: Dataset, batch_size: int, runtime: RuntimeConfig, device: torch.device,
                drop_last: bool = False) -> DataLoader:
    return DataLoader(dataset, batch_size=batch_size, shuffle=False, drop_last=drop_last,
                      num_workers=runtime.num_workers, pin_memory=device.type == "cuda")


def tensorboard_writer(folder: Path):
    """A TensorBoard SummaryWriter in `folder/tb`, or None when tensorboard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        log.warning("tensorboard is not installed: no training curves are written")
        return None
    return SummaryWriter(log_dir=str(folder / "tb"))


__all__ = ["Prepared", "load_prepared", "skip_if_done", "train_loader", "eval_loader", "config_slice",
           "tensorboard_writer"]

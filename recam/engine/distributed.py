"""torchrun / DDP support: process-group set-up, rank queries, model wrapping, reductions.

Under `torchrun --nproc_per_node=N python -m recam.train ...` (WORLD_SIZE > 1) every process runs
the same stage. Semantics:
- training stages split each global batch (`<stage>.batch_size`) over the ranks
  (DistributedSampler, batch_size / N per rank) and average gradients (DDP), so a step sees the
  same images and the same mean gradient as one process with the whole batch: the learning rate
  and the number of steps do not change with N;
- only rank 0 writes checkpoints, results, DONE and TensorBoard files, and logs progress bars;
- export stages shard their images over the ranks; evaluation and the other single-process
  stages run on rank 0 while the others wait.
One process (no WORLD_SIZE) needs none of this and never creates a process group.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist
from torch import nn

from recam.errors import RecamInputError

log = logging.getLogger(__name__)


_alone = False  # True while this rank runs a block by itself (see `alone`)


def world_size() -> int:
    if _alone:
        return 1
    return (
        dist.get_world_size()
        if dist.is_available() and dist.is_initialized()
        else int(os.environ.get("WORLD_SIZE", "1"))
    )


def rank() -> int:
    if _alone:
        return 0
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", "0"))


def is_main() -> bool:
    return rank() == 0


def is_distributed() -> bool:
    return not _alone and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@contextmanager
def alone() -> Iterator[None]:
    """Run a block on this rank by itself, as one process: inside it `is_distributed()` is False,
    `rank()` 0 and `world_size()` 1, so `barrier`, `mean_over_ranks` and `wrap_ddp` are no-ops.

    A stage that only rank 0 runs (an evaluation, the report, the finishing pass of a sharded
    export) must make no collective call: the other ranks, waiting at the stage's closing
    barrier, would match it, and every later barrier would pair with the wrong one.
    """
    global _alone
    before, _alone = _alone, True
    try:
        yield
    finally:
        _alone = before


def init_distributed(device: torch.device) -> torch.device:
    """Join the torchrun process group (nccl on CUDA, gloo on CPU) when WORLD_SIZE > 1; returns
    this process's device (cuda:LOCAL_RANK on GPUs)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=datetime.timedelta(minutes=60))
        log.info("rank %d of %d on %s", dist.get_rank(), dist.get_world_size(), device)
    return device


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` when distributed (device ids on CUDA); the model itself otherwise."""
    if not is_distributed():
        return model
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (checkpoints hold its keys, without a `module.` prefix)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """The mean of a scalar over the ranks (the global batch's loss); the value itself otherwise."""
    if not is_distributed():
        return value
    value = value.detach().clone()
    dist.all_reduce(value)
    return value / dist.get_world_size()


def per_rank_batch(batch_size: int) -> int:
    """The share of a global batch of `batch_size` each rank loads."""
    size = world_size()
    if batch_size % size:
        raise RecamInputError(
            f"recam: batch_size={batch_size} does not split over {size} processes - use a multiple of {size}"
        )
    return batch_size // size

"""The iteration-based training loop of the segmentation stage (deeplab-pytorch's `main.py train`).

`iterations` optimizer updates, each accumulating the gradients of `iter_size` micro-batches whose
losses are divided by `iter_size` (spec §7.1: batch 5 x ITER_SIZE 2); the scheduler steps once per
update. Optional AMP and channels_last, a NaN/inf guard naming the update and the image ids, tqdm
with loss / lr / images/s, TensorBoard scalars, `last.pt` every `checkpoint_every` updates and at
the end, and resume from it (same config only).

Under torchrun the model is wrapped in DDP here: each rank runs its share of every micro-batch
(`StepBatchSampler(num_replicas=, rank=)`), gradients are averaged once per update (the earlier
micro-batches of an update accumulate locally under `no_sync`), logged losses are means over the
ranks, images/s counts the global batch, and rank 0 alone checkpoints, logs and shows progress.

Resuming gives the same weights as an uninterrupted run: the data order is a function of the
global micro-batch number (`StepBatchSampler`), augmentation of (seed, epoch, index), and the
checkpoint holds model, optimizer (momentum buffers), scheduler and RNG states.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Sampler
from recam.engine.progress import progress

from recam.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from recam.engine.distributed import barrier, is_main, unwrap, world_size, wrap_ddp
from recam.engine.loop import StepFn, autocast, compiled, logged_parts

log = logging.getLogger(__name__)


class StepBatchSampler(Sampler[list[tuple[int, int]]]):
    """Micro-batches `start .. total-1` of a run as lists of `(index, epoch)` dataset keys.

    Micro-batch b belongs to epoch b // per_epoch (per_epoch = num_items // batch_size, the
    incomplete last batch dropped); each epoch is a fresh permutation drawn from seed + epoch (as
    torch's DistributedSampler). So micro-batch b is the same whether a run starts at 0 or resumes.

    `batch_size` is the global micro-batch. Under torchrun each of `num_replicas` ranks takes every
    num_replicas-th item of it from position `rank` (as DistributedSampler splits an epoch), so the
    ranks together load exactly the one-process micro-batch.
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        *,
        seed: int,
        start: int,
        total: int,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if num_items < batch_size:
            raise ValueError(f"{num_items} items are fewer than one batch of {batch_size}")
        if batch_size % num_replicas or not 0 <= rank < num_replicas:
            raise ValueError(f"a batch of {batch_size} does not split over {num_replicas} ranks (rank {rank})")
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.start, self.total = start, total
        self.num_replicas, self.rank = num_replicas, rank
        self.per_epoch = num_items // batch_size

    def _order(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.num_items, generator=generator).tolist()

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        epoch, order = -1, []
        for batch in range(self.start, self.total):
            batch_epoch, position = divmod(batch, self.per_epoch)
            if batch_epoch != epoch:
                epoch, order = batch_epoch, self._order(batch_epoch)
            chunk = order[position * self.batch_size : (position + 1) * self.batch_size][self.rank :: self.num_replicas]
            yield [(index, epoch) for index in chunk]

    def __len__(self) -> int:
        return max(0, self.total - self.start)


def _to_device(batch: dict, device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if torch.is_tensor(value):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def train_iterations(
    *,
    model: nn.Module,
    batches: Callable[[int], Iterable[dict]],
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    iterations: int,
    iter_size: int,
    device: torch.device,
    checkpoint_dir: Path,
    checkpoint_extra: dict,
    checkpoint_every: int,
    amp: bool = False,
    channels_last: bool = False,
    grad_clip: float | None = None,
    desc: str = "train",
    log_every: int = 10,
    writer: Any = None,
    compile_model: bool = False,
) -> dict:
    """Run `iterations` updates, resuming from `checkpoint_dir/last.pt` when it holds this config.

    batches(start) yields the micro-batches from global micro-batch `start` on (update i uses
    micro-batches i*iter_size .. i*iter_size + iter_size - 1), each a dict with tensors and "id".
    step_fn(model, batch) returns scalar tensors with "loss" (back-propagated after division by
    iter_size) and any parts to log. Returns {"iterations", "history" (one record per log_every
    updates: mean loss, lr, images/s), "images_per_s", "seconds", "final_loss"}.
    """
    last = checkpoint_dir / "last.pt"
    state = load_checkpoint(last) if last.is_file() else None
    if state is not None and state.get("config") != checkpoint_extra.get("config"):
        log.warning("%s: %s was written with another config - starting over", desc, last)
        state = None
    start, history = 0, []
    bare = unwrap(model)
    if state is not None:
        bare.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        start, history = state["iteration"], state["history"]
        log.info("%s: resuming from %s after iteration %d", desc, last, start)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())

    def save(iteration: int) -> None:
        save_checkpoint(
            last,
            {
                "model": bare.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "iteration": iteration,
                "rng": rng_state(),
                "history": history,
                **checkpoint_extra,
            },
        )

    model = wrap_ddp(compiled(bare, compile_model), device)
    ranks = world_size()
    model.train()
    stream = iter(batches(start * iter_size))
    bar = progress(total=iterations, initial=start, desc=desc, dynamic_ncols=True, disable=not is_main())
    started, seen = time.time(), 0
    window: dict[str, float] = {}
    window_updates = 0
    for iteration in range(start, iterations):
        optimizer.zero_grad(set_to_none=True)
        lr = optimizer.param_groups[0]["lr"]
        for micro in range(iter_size):
            batch = _to_device(next(stream), device, channels_last)
            # DDP averages gradients on the last micro-batch of the update only.
            sync = nullcontext() if micro == iter_size - 1 or ranks == 1 else model.no_sync()
            with sync:
                with autocast(device, amp):
                    parts = step_fn(model, batch)
                loss = parts["loss"]
                parts = logged_parts(
                    parts,
                    desc=desc,
                    where=f"iteration {iteration + 1} (micro-batch {micro + 1}/{iter_size})",
                    ids=batch["id"],
                    last=last,
                )
                scaler.scale(loss / iter_size).backward()
            seen += len(batch["id"]) * ranks
            for key, value in parts.items():
                window[key] = window.get(key, 0.0) + float(value) / iter_size
        if grad_clip is not None:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        window_updates += 1
        done = iteration + 1
        rate = seen / max(time.time() - started, 1e-9)
        bar.set_postfix(loss=f"{window['loss'] / window_updates:.4f}", lr=f"{lr:.2e}", img_s=f"{rate:.1f}")
        bar.update(1)
        if done % log_every == 0 or done == iterations:
            record = {
                "iteration": done,
                "lr": lr,
                "images_per_s": round(rate, 2),
                **{key: value / window_updates for key, value in window.items()},
            }
            history.append(record)
            if writer is not None:
                for key, value in record.items():
                    if key != "iteration":
                        writer.add_scalar(f"{desc}/{key}", value, done)
            window, window_updates = {}, 0
        if done % checkpoint_every == 0 or done == iterations:
            save(done)
            barrier()
    bar.close()
    if writer is not None:
        writer.flush()
    seconds = time.time() - started
    return {
        "iterations": iterations,
        "history": history,
        "seconds": round(seconds, 2),
        "images_per_s": round(seen / max(seconds, 1e-9), 2),
        "final_loss": history[-1]["loss"] if history else float("nan"),
    }

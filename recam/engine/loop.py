"""The training loop shared by the classifier stages: epochs over a loader, poly schedule,
optional AMP, NaN guard, tqdm with loss / lr / images/s, per-epoch validation, `last.pt` every
epoch and resume from it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import nn
from recam.engine.progress import progress

from recam.engine.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from recam.engine.distributed import barrier, is_main, mean_over_ranks, unwrap, wrap_ddp
from recam.errors import RecamInputError

log = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, dict], dict[str, torch.Tensor]]


class NonFiniteLossError(RecamInputError):
    """A NaN/inf loss: training stops naming the step and the batch's image ids."""


def autocast(device: torch.device, enabled: bool):
    """Autocast when asked: CUDA bf16 where supported (else fp16, with a GradScaler in the loops),
    CPU bf16 (what torch's CPU autocast supports). A no-op when `enabled` is false, so the float32
    path is the plain eager one."""
    if not enabled:
        return nullcontext()
    if device.type == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return torch.autocast(device.type, dtype=torch.bfloat16)


def compiled(model: nn.Module, enabled: bool) -> nn.Module:
    """`torch.compile(model)` for the training step when asked (runtime.compile), else the model.
    The compiled wrapper shares the parameters, so checkpoints keep taking the bare model's keys."""
    return torch.compile(model) if enabled else model


def logged_parts(
    parts: dict[str, torch.Tensor], *, desc: str, where: str, ids: list, last: Path
) -> dict[str, torch.Tensor]:
    """The loss parts of a step as means over the ranks (detached), or NonFiniteLossError naming
    the step (`where`), the batch's image ids and the last good checkpoint. Every rank sees the same
    mean, so all ranks stop together."""
    parts = {key: mean_over_ranks(value.detach()) for key, value in parts.items()}
    if not torch.isfinite(parts["loss"]):
        raise NonFiniteLossError(
            f"recam: {desc} loss is {parts['loss'].item()} at {where}, images {list(ids)[:16]} - check these "
            f"images and labels or lower the learning rate; the last good checkpoint is {last}"
        )
    return parts


def steps_per_epoch(num_batches: int, max_steps: int | None) -> int:
    return num_batches if max_steps is None else min(num_batches, max_steps)


def train_epochs(
    *,
    model: nn.Module,
    loader: torch.utils.data.DataLoader,
    step_fn: StepFn,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    epochs: int,
    device: torch.device,
    checkpoint_dir: Path,
    checkpoint_extra: dict,
    validate: Callable[[nn.Module], dict],
    max_steps: int | None = None,
    amp: bool = False,
    grad_clip: float | None = None,
    desc: str = "train",
    log_every: int = 10,
    writer: Any = None,
    keep_epochs: bool = False,
    compile_model: bool = False,
) -> list[dict]:
    """Train for `epochs`, resuming from `checkpoint_dir/last.pt` when it exists.

    step_fn(model, batch) returns a dict of scalar tensors with the key "loss" (what is
    back-propagated) and any parts worth logging. The scheduler is stepped once per optimizer step
    (after it, as torch's schedulers expect). With keep_epochs, the weights of every epoch are
    also kept as `epoch_<n>.pt` (the reference saves ReCAM weights per epoch). `compile_model`
    runs the training steps through torch.compile (validation stays eager). Returns the per-epoch history (train means,
    validation metrics, images/s, seconds).
    Under torchrun the model is wrapped in DDP here (step_fn gets the wrapper; checkpoints and
    `validate` get the bare model), logged losses are means over the ranks, images/s counts the
    global batch, and rank 0 alone writes and shows progress.
    """
    last = checkpoint_dir / "last.pt"
    history: list[dict] = []
    start_epoch = 0
    state = load_checkpoint(last) if last.is_file() else None
    if state is not None and state.get("config") != checkpoint_extra.get("config"):
        log.warning("%s: %s was written with another config - starting over", desc, last)
        state = None
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        set_rng_state(state["rng"])
        history = state["history"]
        start_epoch = state["epoch"] + 1
        log.info("%s: resuming from %s after epoch %d", desc, last, state["epoch"] + 1)
    scaler = torch.amp.GradScaler("cuda", enabled=amp and device.type == "cuda" and not torch.cuda.is_bf16_supported())
    n_steps = steps_per_epoch(len(loader), max_steps)
    bare = unwrap(model)
    model = wrap_ddp(compiled(bare, compile_model), device)
    ranks = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    global_step = start_epoch * n_steps
    loader_seed = loader.generator.initial_seed() if loader.generator is not None else 0
    for epoch in range(start_epoch, epochs):
        if hasattr(loader.dataset, "set_epoch"):
            loader.dataset.set_epoch(epoch)
        if hasattr(loader.sampler, "set_epoch"):
            loader.sampler.set_epoch(epoch)
        if loader.generator is not None:  # worker seeds of (seed, epoch): the same in a resumed run
            loader.generator.manual_seed(loader_seed + epoch)
        model.train()
        sums: dict[str, float] = {}
        seen, started = 0, time.time()
        bar = progress(
            total=n_steps, desc=f"{desc} {epoch + 1}/{epochs}", leave=False, dynamic_ncols=True, disable=not is_main()
        )
        for step, batch in enumerate(loader):
            if step >= n_steps:
                break
            batch = {k: (v.to(device, non_blocking=True) if torch.is_tensor(v) else v) for k, v in batch.items()}
            with autocast(device, amp):
                parts = step_fn(model, batch)
            loss = parts["loss"]
            parts = logged_parts(
                parts,
                desc=desc,
                where=f"epoch {epoch + 1} step {step} (global step {global_step})",
                ids=batch["id"],
                last=last,
            )
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            global_step += 1
            size = len(batch["id"]) * ranks
            seen += size
            for key, value in parts.items():
                sums[key] = sums.get(key, 0.0) + float(value.detach()) * size
            rate = seen / max(time.time() - started, 1e-9)
            bar.set_postfix(
                loss=f"{parts['loss'].item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}", img_s=f"{rate:.1f}"
            )
            bar.update(1)
            if writer is not None and global_step % log_every == 0:
                for key, value in parts.items():
                    writer.add_scalar(f"{desc}/{key}", float(value.detach()), global_step)
                writer.add_scalar(f"{desc}/lr", optimizer.param_groups[0]["lr"], global_step)
        bar.close()
        seconds = time.time() - started
        record = {
            "epoch": epoch + 1,
            "steps": global_step,
            "seconds": round(seconds, 2),
            "images_per_s": round(seen / max(seconds, 1e-9), 2),
        }
        record.update({f"train_{k}": v / max(seen, 1) for k, v in sums.items()})
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            record.update({f"val_{k}": v for k, v in validate(bare).items()})
        history.append(record)
        if writer is not None:
            for key, value in record.items():
                if key.startswith("val_") and isinstance(value, float) and math.isfinite(value):
                    writer.add_scalar(f"{desc}/{key}", value, global_step)
        log.info(
            "%s epoch %d: %s",
            desc,
            epoch + 1,
            ", ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in record.items()),
        )
        save_checkpoint(
            last,
            {
                "model": bare.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "epoch": epoch,
                "step": global_step,
                "rng": rng_state(),
                "history": history,
                **checkpoint_extra,
            },
        )
        if keep_epochs:
            save_checkpoint(
                checkpoint_dir / f"epoch_{epoch + 1}.pt",
                {"model": bare.state_dict(), "epoch": epoch, **checkpoint_extra},
            )
        barrier()
    return history

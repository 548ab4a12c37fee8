"""deeplab-pytorch's optimiser (spec §7.1): SGD with real momentum and a poly learning rate that
is recomputed only every `every` iterations (LR_DECAY = 10)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def stepped_poly_factor(step: int, *, max_step: int, power: float, every: int) -> float:
    """Learning-rate factor of update `step` (0-based): (1 - every*floor(step/every) / max_step) ** power.

    deeplab-pytorch's `PolynomialLR(step_size=10)` is stepped with the 1-based iteration just done
    and only changes the rate when that number is a multiple of 10, so updates 0..9 run at the base
    rate, 10..19 at (1 - 10/max_step)^power, and so on. Steps past max_step - 1 keep its rate.
    """
    if max_step <= 0 or every <= 0:
        raise ValueError(f"max_step ({max_step}) and every ({every}) must be positive")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    last = min(step, max_step - 1)
    return (1 - every * (last // every) / max_step) ** power


def make_seg_sgd(
    param_groups: Sequence[dict[str, Any]], *, momentum: float, max_step: int, power: float, every: int
) -> tuple[torch.optim.SGD, LambdaLR]:
    """SGD over `param_groups` (each with its own lr and weight_decay) plus the stepped poly schedule.

    Call `optimizer.step()` then `scheduler.step()` once per update; update t then runs at
    `group lr * stepped_poly_factor(t, ...)`. Both restore with `load_state_dict`.
    """
    groups = [dict(group) for group in param_groups]
    optimizer = torch.optim.SGD(
        groups, lr=groups[0]["lr"], momentum=momentum, dampening=0.0, weight_decay=0.0, nesterov=False
    )
    factor = functools.partial(stepped_poly_factor, max_step=max_step, power=power, every=every)
    return optimizer, LambdaLR(optimizer, lr_lambda=factor)

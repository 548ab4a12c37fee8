"""The reference's "PolyOptimizer": SGD with a poly learning-rate schedule (spec §2.5, §9.1).

The reference subclasses SGD and, before update t (counted from 0), sets every group's rate to
`initial_lr * (1 - t/max_step)^power` while t < max_step, leaving it unchanged afterwards. We
build a plain `torch.optim.SGD` and a `LambdaLR` with the same factor, so both checkpoint with
their own `state_dict` (the scheduler's holds the step counter).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import torch
from torch.optim.lr_scheduler import LambdaLR


def poly_lr(base_lr: float, step: int, max_step: int, power: float) -> float:
    """Learning rate of update `step` (0-based) under the reference's poly schedule (spec §2.5).

    Returns `base_lr * (1 - step/max_step) ** power` for step < max_step. From step = max_step
    on, the reference stops updating the rate, so it stays at the value of step max_step - 1,
    `base_lr * (1/max_step) ** power`; it never reaches 0. Computed in the reference's order
    (factor first, then times the base rate) so the float64 values match it bit for bit.
    """
    if max_step <= 0:
        raise ValueError(f"max_step must be positive, got {max_step}")
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    last = min(step, max_step - 1)
    factor = (1 - last / max_step) ** power
    return base_lr * factor


def make_poly_sgd(
    param_groups: Sequence[dict[str, Any]], *, momentum: float, max_step: int, power: float
) -> tuple[torch.optim.SGD, LambdaLR]:
    """SGD plus a poly schedule, reproducing the reference optimiser (spec §2.5).

    param_groups: dicts with keys `params`, `lr` (the group's base rate) and `weight_decay`.
    momentum: SGD momentum. The reference passes its weight decay positionally into SGD's
      momentum slot, so its effective momentum is 1e-4; the configs default to that (§9.1).
    max_step: number of updates the schedule spans; power: the poly exponent (0.9).

    Returns (optimizer, scheduler). Call `optimizer.step()` then `scheduler.step()` once per
    update: update t then runs at `poly_lr(lr, t, max_step, power)` per group (the scheduler
    sets rates for the next update from each group's `initial_lr` and its step counter).
    Both objects restore with `load_state_dict`. SGD: no dampening, no Nesterov, the momentum
    buffer starts as the first step's gradient (plus weight decay), as in the reference.
    """
    groups = [dict(group) for group in param_groups]
    for index, group in enumerate(groups):
        missing = {"params", "lr", "weight_decay"} - set(group)
        if missing:
            raise ValueError(f"parameter group {index} lacks {sorted(missing)}")
    # Every group sets its own lr and weight_decay, so SGD's defaults below are never used;
    # they are given by keyword because a positional third argument is momentum (the
    # reference's bug).
    optimizer = torch.optim.SGD(
        groups, lr=groups[0]["lr"], momentum=momentum, dampening=0.0, weight_decay=0.0, nesterov=False
    )
    # A partial (not a lambda) so LambdaLR's state_dict can hold it; base rate 1.0 makes the
    # lambda the bare factor, and LambdaLR multiplies it by each group's initial_lr.
    factor = functools.partial(poly_lr, 1.0, max_step=max_step, power=power)
    scheduler = LambdaLR(optimizer, lr_lambda=factor)
    return optimizer, scheduler

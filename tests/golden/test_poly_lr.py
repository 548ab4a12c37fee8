"""Golden vectors of the poly schedule and the reference's SGD update (momentum 1e-4)."""

from __future__ import annotations

import numpy as np
import torch

from recam.engine.optim import make_poly_sgd, poly_lr

LR_RTOL = 1e-12
PARAM_RTOL, PARAM_ATOL = 1e-5, 1e-6


def groups_count(z: dict) -> int:
    count = 0
    while f"param{count}" in z:
        count += 1
    assert count == len(z["initial_lr"])
    return count


def build(z: dict, params: list[torch.Tensor]):
    groups = [
        {"params": [p], "lr": float(lr), "weight_decay": float(z["weight_decay"])}
        for p, lr in zip(params, z["initial_lr"])
    ]
    return make_poly_sgd(
        groups, momentum=float(z["sgd_momentum"]), max_step=int(z["max_step"]), power=float(z["poly_power"])
    )


def test_poly_lr_table(golden):
    z = golden("poly_lr")
    max_step, power = int(z["max_step"]), float(z["poly_power"])
    steps = z["lr"].shape[0]
    assert steps > max_step  # the table goes past max_step, where the rate must stay frozen
    table = np.array([[poly_lr(float(lr), t, max_step, power) for lr in z["initial_lr"]] for t in range(steps)])
    assert np.allclose(table, z["lr"], rtol=LR_RTOL, atol=0)
    assert np.allclose(table / z["initial_lr"], z["lr_mult"], rtol=LR_RTOL, atol=0)
    assert np.all(table[max_step:] == table[max_step - 1]) and np.all(table > 0)


def run_steps(z: dict, optimizer, scheduler, params, start: int, stop: int) -> None:
    for t in range(start, stop):
        used = np.array([group["lr"] for group in optimizer.param_groups])
        assert np.allclose(used, z["lr"][t], rtol=LR_RTOL, atol=0)
        for g, p in enumerate(params):
            p.grad = torch.from_numpy(z[f"grad{g}"][t].copy())
        optimizer.step()
        scheduler.step()
        for g, p in enumerate(params):
            assert np.allclose(p.detach().numpy(), z[f"param{g}"][t + 1], rtol=PARAM_RTOL, atol=PARAM_ATOL), (t, g)


def test_sgd_trajectory_and_resume(golden):
    z = golden("poly_lr")
    n_groups = groups_count(z)
    steps = z["grad0"].shape[0]
    params = [torch.tensor(z[f"param{g}"][0].copy(), requires_grad=True) for g in range(n_groups)]
    optimizer, scheduler = build(z, params)
    half = steps // 2
    run_steps(z, optimizer, scheduler, params, 0, half)

    # Resume into fresh objects from the state dicts (as a restarted stage does).
    state = {
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "params": [p.detach().clone() for p in params],
    }
    resumed = [torch.tensor(p.numpy(), requires_grad=True) for p in state["params"]]
    optimizer, scheduler = build(z, resumed)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    run_steps(z, optimizer, scheduler, resumed, half, steps)

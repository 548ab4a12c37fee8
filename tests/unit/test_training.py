"""The training loop: the loss falls, resume equals an uninterrupted run, NaN stops with ids."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from recam.engine.loop import NonFiniteLossError, train_epochs
from recam.engine.optim import make_poly_sgd
from recam.models.cam_net import build_cam_net
from recam.stages.cam import bce_step


class Blobs(Dataset):
    """Images with a bright square for class 0 and/or a dark one for class 1 (learnable in steps)."""

    def __init__(self, n: int = 16, size: int = 32) -> None:
        g = torch.Generator().manual_seed(0)
        self.images = torch.randn(n, 3, size, size, generator=g) * 0.1
        self.labels = torch.zeros(n, 3)
        for i in range(n):
            if i % 2 == 0:
                self.images[i, :, 4:14, 4:14] += 2.0
                self.labels[i, 0] = 1
            if i % 3 == 0:
                self.images[i, :, 18:28, 18:28] -= 2.0
                self.labels[i, 1] = 1
            if self.labels[i].sum() == 0:
                self.images[i, 0] += 1.0
                self.labels[i, 2] = 1

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.images[i], "label": self.labels[i], "id": f"img{i}"}


def _train(tmp_path, epochs: int, step_fn=bce_step, seed: int = 0, config: dict | None = None):
    torch.manual_seed(seed)
    model = build_cam_net(arch="resnet18", num_classes=3, fixed_bn=False)
    loader = DataLoader(Blobs(), batch_size=8, shuffle=False, drop_last=True)
    optimizer, scheduler = make_poly_sgd(
        model.param_groups(lr=0.01, head_lr_mult=10, weight_decay=1e-4),
        momentum=0.9,
        max_step=6 * len(loader),
        power=0.9,
    )
    history = train_epochs(
        model=model,
        loader=loader,
        step_fn=step_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        epochs=epochs,
        device=torch.device("cpu"),
        checkpoint_dir=tmp_path,
        checkpoint_extra={"config": config},
        validate=lambda m: {},
        desc="test",
    )
    return model, history


def test_loss_falls(tmp_path) -> None:
    _, history = _train(tmp_path, epochs=6)
    losses = [h["train_loss"] for h in history]
    assert losses[-1] < 0.7 * losses[0], losses


def test_resume_equals_uninterrupted_run(tmp_path) -> None:
    straight, _ = _train(tmp_path / "a", epochs=3)
    _train(tmp_path / "b", epochs=2)  # "killed" after epoch 2 ...
    resumed, history = _train(tmp_path / "b", epochs=3, seed=123)  # ... restarted: resumes from last.pt
    assert [h["epoch"] for h in history] == [1, 2, 3]
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        torch.testing.assert_close(a, b, msg=name)


def test_nan_loss_stops_naming_step_and_images(tmp_path) -> None:
    def nan_step(model, batch):
        return {"loss": bce_step(model, batch)["loss"] * float("nan")}

    with pytest.raises(NonFiniteLossError, match=r"step 0.*img0"):
        _train(tmp_path, epochs=1, step_fn=nan_step)


def test_checkpoint_of_another_config_is_not_resumed(tmp_path) -> None:
    _train(tmp_path, epochs=1, config={"lr": 1})
    _, history = _train(tmp_path, epochs=2, config={"lr": 2})
    assert [h["epoch"] for h in history] == [1, 2]  # started over, not resumed after epoch 1
    _, history = _train(tmp_path, epochs=3, config={"lr": 2})
    assert [h["epoch"] for h in history] == [1, 2, 3]  # same config: resumed (history kept)

"""Checkpoints as plain dicts (model, optimizer, scheduler, epoch, step, RNG, config, class names),
written atomically (a `last.pt.<host>.<pid>.tmp` file, then `os.replace`), loaded strictly with a clear error."""

from __future__ import annotations

import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from recam.engine.distributed import is_main
from recam.errors import RecamInputError
from recam.io import atomic_write_bytes


def rng_state() -> dict:
    return {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Atomic torch.save; under torchrun only rank 0 writes (every rank holds the same weights)."""
    if not is_main():
        return
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise RecamInputError(f"recam: checkpoint {path} does not exist")
    try:
        # Our checkpoints hold RNG states and plain config dicts, hence weights_only=False; only
        # load checkpoints you wrote yourself.
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:
        raise RecamInputError(f"recam: checkpoint {path} cannot be read ({err}); delete it to start over") from err


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Strict load; a mismatch names the missing, unexpected and wrongly-shaped keys (first few)."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong_shape = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    if missing or unexpected or wrong_shape:
        raise RecamInputError(
            f"recam: checkpoint {source} does not match the model (architecture or classes differ): "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong_shape[:5]} "
            "- check model.arch and the dataset's classes"
        )
    model.load_state_dict(state, strict=True)


def check_class_names(checkpoint: dict, class_names: list[str], source: str | Path) -> None:
    saved = checkpoint.get("class_names")
    if saved is not None and list(saved) != list(class_names):
        raise RecamInputError(
            f"recam: checkpoint {source} was trained on classes {list(saved)[:6]}..., "
            f"the dataset has {list(class_names)[:6]}... - use the matching dataset"
        )

"""Seeding every random number generator before a stage (checkpoints save and restore them: engine/checkpoint.py)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch. Done before every stage, so a stage's random initialisation
    (e.g. the ReCAM predictor) does not depend on which stages ran before it in the same process."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)

"""What the stages share for `threshold=auto`: read a sample, run the configured GT-free selector.

The sample is a fixed random subset (`thresholds.sample_size`, `thresholds.seed`) of the list
`thresholds.split`; it reads seeds (or walk scores), image-level labels (the seeds' `keys`) and,
for the `crf` selector, the images. No ground-truth mask is opened here. The choice is
deterministic, so every stage that needs the auto seed threshold of one `seeds/<method>`
(eval_seeds, ir_labels, masks/crf) recomputes the same value instead of reading another stage's
results (eval_seeds reads the ground truth; the mask chain must not depend on it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from recam.config import AUTO, Config, ThresholdsConfig, threshold_setting
from recam.data.voc12 import image_path
from recam.errors import RecamInputError
from recam.io import load_npz, load_rgb
from recam.stages.common import Prepared
from recam.thresholds import SELECTORS, ScoreMap, candidate_grid, sample_ids, select_threshold

log = logging.getLogger(__name__)

# Selectors that look at the image itself (the others read only the score maps and labels).
IMAGE_SELECTORS = ("edges", "crf", "consensus")


def is_auto(value: float | str | None, key: str) -> bool:
    """True for "auto"; checks the field (a number in (0, 1), None or auto) on the way."""
    return threshold_setting(value, key) == AUTO


def check_thresholds(thresholds: ThresholdsConfig) -> np.ndarray:
    """The candidate grid of `thresholds`, or one line naming the bad key."""
    if thresholds.selector not in SELECTORS:
        raise RecamInputError(f"recam: thresholds.selector={thresholds.selector!r} - use one of {', '.join(SELECTORS)}")
    if thresholds.sample_size < 1:
        raise RecamInputError(f"recam: thresholds.sample_size={thresholds.sample_size} - use at least 1 image")
    if len(thresholds.grid) != 3:
        raise RecamInputError(f"recam: thresholds.grid={thresholds.grid} - give [start, stop, step]")
    start, stop, step = thresholds.grid
    if not (0.0 < start <= stop < 1.0 and step > 0):
        raise RecamInputError(f"recam: thresholds.grid={thresholds.grid} - need 0 < start <= stop < 1 and step > 0")
    return candidate_grid(start, stop, step)


def sample_of(data: Prepared, thresholds: ThresholdsConfig) -> list[str]:
    return sample_ids(data.ids(thresholds.split), thresholds.sample_size, thresholds.seed)


def select(thresholds: ThresholdsConfig, maps: list[ScoreMap], what: str) -> dict:
    """Run the selector on `maps`; the record every auto stage writes into its results."""
    grid = check_thresholds(thresholds)
    started = time.perf_counter()
    chosen = select_threshold(thresholds.selector, maps, grid)
    seconds = round(time.perf_counter() - started, 2)
    log.info(
        "auto threshold of %s: %s chose t=%.2f (score %.3f) on %d images in %.1f s",
        what,
        chosen.selector,
        chosen.threshold,
        chosen.score,
        len(maps),
        seconds,
    )
    return {
        "selector": chosen.selector,
        "threshold": chosen.threshold,
        "score": round(chosen.score, 6),
        "seconds": seconds,
        "sample_images": len(maps),
        "sample_split": thresholds.split,
        "sample_seed": thresholds.seed,
    }


def read_sample(ids: list[str], read: Callable[[str], ScoreMap]) -> list[ScoreMap]:
    return [read(image_id) for image_id in ids]


def seed_threshold(cfg: Config, data: Prepared, seeds: Path) -> dict:
    """The GT-free seed threshold of the seeds in `seeds` (a `seeds/<method>` folder)."""
    thresholds = cfg.thresholds
    check_thresholds(thresholds)
    ids = sample_of(data, thresholds)
    missing = [i for i in ids if not (seeds / f"{i}.npz").is_file()]
    if missing:
        raise RecamInputError(
            f"recam: the auto threshold's sample needs seeds of thresholds.split={thresholds.split}, "
            f"but {seeds} has no {missing[0]}.npz ({len(missing)} missing) - export seeds for that "
            "split (seeds.split) or set thresholds.split to the exported one"
        )
    with_image = thresholds.selector in IMAGE_SELECTORS

    def read(image_id: str) -> ScoreMap:
        seed = load_npz(seeds / f"{image_id}.npz")
        return ScoreMap(
            scores=seed["high_res"].astype(np.float32),
            keys=seed["keys"].astype(np.int64),
            image=load_rgb(image_path(cfg.dataset.root, image_id)) if with_image else None,
        )

    return select(thresholds, read_sample(ids, read), str(seeds))

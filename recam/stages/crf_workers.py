"""The per-image workers of the dense-CRF stages (`ir_labels`, `masks.method=crf`) and their jobs.

Kept in a module that imports neither torch nor hydra nor the pipeline: a spawned pool worker
unpickles its function by importing the function's module, and importing the stage modules
(torch, torchvision, hydra) took 2-3 s per worker on an idle machine and 12-24 s on a loaded one -
the whole difference between our `ir_labels` and the reference's loop on a few images
(docs/performance.md). These import numpy, PIL and pydensecrf only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recam.io import load_npz, load_rgb, save_label_png
from recam.masks.crf import DEEPLAB_KERNELS, IR_LABEL_KERNELS, crf_from_labels
from recam.masks.ir_labels import confident_labels, ir_label

KERNELS = {"ir_label": IR_LABEL_KERNELS, "deeplab": DEEPLAB_KERNELS}


@dataclass(frozen=True)
class IrLabelJob:
    image: str
    seed: str
    out: str
    fg_threshold: float
    bg_threshold: float
    gt_prob: float


def label_image(job: IrLabelJob) -> dict:
    """Worker: one image's IR label, saved as `job.out`; returns its pixel shares."""
    seed = load_npz(job.seed)
    label = ir_label(
        load_rgb(job.image),
        seed["high_res"].astype(np.float32),
        seed["keys"],
        fg_threshold=job.fg_threshold,
        bg_threshold=job.bg_threshold,
        gt_prob=job.gt_prob,
    )
    save_label_png(job.out, label)
    return {"fg": float(((label > 0) & (label != 255)).mean()), "unsure": float((label == 255).mean())}


@dataclass(frozen=True)
class CrfMaskJob:
    image: str
    seed: str
    out: str
    threshold: float
    gt_prob: float
    kernels: str


def crf_mask(job: CrfMaskJob) -> None:
    """Worker: seed label at the background threshold, refined by a dense CRF, saved as `job.out`."""
    seed = load_npz(job.seed)
    keys = seed["keys"].astype(np.int64)
    compact = confident_labels(seed["high_res"].astype(np.float32), keys, job.threshold)
    refined = crf_from_labels(
        load_rgb(job.image), compact, len(keys) + 1, gt_prob=job.gt_prob, kernels=KERNELS[job.kernels]
    )
    save_label_png(job.out, np.concatenate([[0], keys + 1])[refined].astype(np.uint8))

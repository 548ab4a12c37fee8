"""GT-free background-threshold selectors: arrays in, a threshold and a confidence out.

Every WSSS pipeline (the official ReCAM code included) tunes its background thresholds against
ground-truth masks. These selectors choose one from what the pipeline already has and no mask:
a sample of images, their image-level labels (the `keys` of a seed) and the class score maps
(seed CAMs, or the upsampled random walk), each max-normalised to [0, 1]. They all read the map
the way `seed_label` labels it: a pixel is background at threshold t when its largest class score
m <= t (a tie goes to background), else the class of that largest score.

- `otsu`: Otsu's criterion on the pooled m values (every image weighs the same): the t of largest
  between-class variance; confidence = Otsu's separability eta = sigma_b^2 / sigma^2.
- `stability`: the plateau of the foreground-area curve A(t): the t where the partition changes
  least as t moves, the area change over a small window divided by the smaller of fg and bg area
  (so the trivial all-fg / all-bg plateaus never win); confidence = 1 - min / median of it.
- `edges`: the t whose label borders follow the image's edges best (mean normalised image
  gradient across the borders, smoothed over neighbouring candidates); confidence = 1 - median /
  max of that curve.
- `consensus` (the default, docs/thresholds.md): the mean of the `otsu` and `edges`
  thresholds; confidence = 1 - their distance. Otsu alone sits low on the synthetic set's broad
  CAMs, `edges` alone is noisy and sometimes runs to a grid end; their mean is steadier.
- `crf`: agreement of the seed partition at t with its dense-CRF refinement on the image (the
  reference's IR-label CRF): the mean over images of the IoU between the thresholded label and
  the CRF's label, averaged over background and the image's classes (a class the image is known
  to hold but that both leave out counts 0); confidence = that agreement at the chosen t.

On a plateau of equally good candidates (a clean two-level map) each returns its middle.
Nothing here reads files or picks a device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from recam.eval.metrics import seed_label
from recam.masks.crf import IR_LABEL_KERNELS, CrfKernels, crf_from_labels

# Partitions whose smaller side holds under this share of the pooled pixels count as trivial
# (all foreground or all background) for `stability`.
MIN_SIDE = 0.01
# Relative tolerance under which two criterion values tie (a plateau), for the middle-of-plateau rule.
TIE = 1e-9


@dataclass(frozen=True)
class ScoreMap:
    """One image of a selector's sample.

    scores: (n, H, W) float class maps in [0, 1] of the image's n classes (seed `high_res`, or the
      upsampled, max-normalised walk); keys: (n,) int 0-based classes (image-level labels);
    image: (H, W, 3) uint8 RGB, needed only by `edges`, `crf` and `consensus`.
    """

    scores: np.ndarray
    keys: np.ndarray
    image: np.ndarray | None = None


@dataclass(frozen=True)
class Selection:
    """A selector's answer: `threshold` (one of the candidates), `score` (confidence in [0, 1],
    comparable between runs of one selector only) and `curve` (candidate t -> criterion; for
    `consensus` the thresholds of its two parts)."""

    selector: str
    threshold: float
    score: float
    curve: dict[float, float] = field(default_factory=dict)


def candidate_grid(start: float, stop: float, step: float) -> np.ndarray:
    """start..stop inclusive by step, rounded to 1e-6 (as eval_seeds' sweep, so 0.21 is 0.21)."""
    if not (step > 0 and start <= stop):
        raise ValueError(f"candidate grid needs step > 0 and start <= stop, got {start}, {stop}, {step}")
    return np.unique(np.round(np.arange(start, stop + step / 2, step), 6))


def sample_ids(ids: Sequence[str], size: int, seed: int) -> list[str]:
    """A fixed random sample of `size` ids (all of them if fewer), kept in list order."""
    if size < 1:
        raise ValueError(f"sample size must be >= 1, got {size}")
    if size >= len(ids):
        return list(ids)
    chosen = np.random.default_rng(seed).choice(len(ids), size=size, replace=False)
    return [ids[i] for i in sorted(chosen.tolist())]


def linked_thresholds(threshold: float, fg_offset: float = 0.14, bg_offset: float = 0.11) -> dict[str, float]:
    """IR-label thresholds linked to a seed threshold t (spec §5.3, the ReCAM author's rule):
    fg = t + fg_offset, bg = t - bg_offset, both clipped to [0.01, 0.99] and rounded to 1e-6.
    The defaults turn ReCAM's t = 0.21 into its 0.35 / 0.10."""
    clip = lambda value: round(float(min(max(value, 0.01), 0.99)), 6)  # noqa: E731
    return {"fg": clip(threshold + fg_offset), "bg": clip(threshold - bg_offset)}


def _pixel_max(score_map: ScoreMap) -> np.ndarray | None:
    """(H*W,) float64 largest class score per pixel; None for an image without classes."""
    scores = np.asarray(score_map.scores)
    if scores.ndim != 3 or scores.shape[0] != len(score_map.keys):
        raise ValueError(f"scores {scores.shape} must be (n, H, W) with n = len(keys) = {len(score_map.keys)}")
    if scores.shape[0] == 0:
        return None
    return scores.reshape(scores.shape[0], -1).max(axis=0).astype(np.float64)


def _pooled_moments(maps: Sequence[ScoreMap], grid: np.ndarray) -> dict[str, np.ndarray]:
    """Per candidate t, pooled over images (each image weighing 1): w_bg (share of pixels with
    m <= t), s_bg (their weighted sum of m), plus the totals s and q (sums of m and m^2)."""
    w_bg = np.zeros(grid.size)
    s_bg = np.zeros(grid.size)
    total_s = total_q = 0.0
    count = 0
    for score_map in maps:
        m = _pixel_max(score_map)
        if m is None:
            continue
        m = np.sort(m)
        weight = 1.0 / m.size
        # Pixels with m <= t, as seed_label (float32 compare: the CAMs meet t in float32 there).
        below = np.searchsorted(m.astype(np.float32), grid.astype(np.float32), side="right")
        cumsum = np.concatenate([[0.0], np.cumsum(m)])
        w_bg += weight * below
        s_bg += weight * cumsum[below]
        total_s += weight * cumsum[-1]
        total_q += weight * float(np.dot(m, m))
        count += 1
    if count == 0:
        raise ValueError("no image of the sample has a class: nothing to threshold")
    return {"w_bg": w_bg / count, "s_bg": s_bg / count, "s": total_s / count, "q": total_q / count}


def _middle_of_best(grid: np.ndarray, criterion: np.ndarray, maximise: bool) -> int:
    """Index into `grid` of the best criterion (NaN = candidate not evaluated, +-inf = unusable).

    On a tie the longest run of tied consecutive evaluated candidates is a plateau (a clean
    two-level map gives one), and the candidate nearest its middle wins, not its first end.
    """
    keep = np.flatnonzero(~np.isnan(criterion))
    values = criterion[keep]
    usable = np.isfinite(values)
    if not usable.any():
        raise ValueError("no candidate threshold gives a usable criterion")
    best = values[usable].max() if maximise else values[usable].min()
    tied = usable & (np.abs(values - best) <= TIE * max(1.0, abs(best)))
    runs, start = [], None
    for i, flag in enumerate(np.append(tied, False)):
        if flag and start is None:
            start = i
        elif not flag and start is not None:
            runs.append((start, i - 1))
            start = None
    first, last = max(runs, key=lambda run: run[1] - run[0])
    middle = (grid[keep[first]] + grid[keep[last]]) / 2
    # The evaluated candidate nearest the middle (the lower one of two equally near).
    return int(keep[first : last + 1][np.argmin(np.abs(grid[keep[first : last + 1]] - middle + 1e-12))])


def select_otsu(maps: Sequence[ScoreMap], grid: np.ndarray) -> Selection:
    """Otsu's threshold of the pooled per-pixel class maxima (see the module docstring)."""
    grid = np.asarray(grid, dtype=np.float64)
    moments = _pooled_moments(maps, grid)
    w0, s0 = moments["w_bg"], moments["s_bg"]
    w1, s1 = 1.0 - w0, moments["s"] - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        mu0, mu1 = s0 / w0, s1 / w1
        between = w0 * w1 * (mu0 - mu1) ** 2
    between = np.where((w0 > 0) & (w1 > 0), between, np.nan)
    index = _middle_of_best(grid, between, maximise=True)
    variance = moments["q"] - moments["s"] ** 2
    score = float(between[index] / variance) if variance > 0 else 0.0
    return Selection(
        "otsu",
        float(grid[index]),
        float(np.clip(score, 0.0, 1.0)),
        dict(zip(grid.tolist(), np.nan_to_num(between).tolist())),
    )


def select_stability(maps: Sequence[ScoreMap], grid: np.ndarray, window: int = 2) -> Selection:
    """The plateau of the foreground-area curve (see the module docstring).

    window: the area change at candidate t is A(t - window * step) - A(t + window * step) (the
    ends clipped to [0, 1], the change divided by the clipped width, so the first and last
    candidates are judged like the others), divided by min(A, 1 - A) at t; candidates with a
    side under MIN_SIDE are out.
    """
    grid = np.asarray(grid, dtype=np.float64)
    step = float(np.min(np.diff(grid))) if grid.size > 1 else 0.01
    lo, hi = np.clip(grid - window * step, 0.0, 1.0), np.clip(grid + window * step, 0.0, 1.0)
    areas = 1.0 - _pooled_moments(maps, np.concatenate([grid, lo, hi]))["w_bg"]  # A(t): pooled foreground share
    area, area_lo, area_hi = np.split(areas, 3)
    side = np.minimum(area, 1.0 - area)
    with np.errstate(divide="ignore", invalid="ignore"):
        change = (area_lo - area_hi) / (hi - lo) * (2 * window * step) / side
    change = np.where(side >= MIN_SIDE, change, np.inf)
    index = _middle_of_best(grid, change, maximise=False)
    finite = change[np.isfinite(change)]
    median = float(np.median(finite))
    score = 1.0 - float(change[index]) / median if median > 0 else 0.0
    return Selection(
        "stability",
        float(grid[index]),
        float(np.clip(score, 0.0, 1.0)),
        dict(zip(grid.tolist(), np.where(np.isfinite(change), change, -1.0).tolist())),
    )


def _image_gradient(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|forward difference| of the grey image down (H-1, W) and right (H, W-1), divided by the
    image's mean difference (so images of different contrast weigh the same)."""
    grey = np.asarray(image, dtype=np.float64).mean(axis=2)
    down, right = np.abs(np.diff(grey, axis=0)), np.abs(np.diff(grey, axis=1))
    mean = (down.sum() + right.sum()) / max(down.size + right.size, 1)
    return (down / mean, right / mean) if mean > 0 else (down, right)


def edge_contrast(
    score_map: ScoreMap, threshold: float, gradient: tuple[np.ndarray, np.ndarray] | None = None
) -> float:
    """Mean normalised image gradient across the borders of the seed label at `threshold`
    (pixel pairs whose labels differ, background and classes alike); NaN without a border."""
    if score_map.image is None:
        raise ValueError("the edges selector needs the images (ScoreMap.image)")
    down, right = _image_gradient(score_map.image) if gradient is None else gradient
    scores = np.asarray(score_map.scores)
    label = seed_label(scores, np.arange(scores.shape[0]), threshold)
    border_down, border_right = label[:-1] != label[1:], label[:, :-1] != label[:, 1:]
    count = np.count_nonzero(border_down) + np.count_nonzero(border_right)
    if count == 0:
        return float("nan")
    return float((down[border_down].sum() + right[border_right].sum()) / count)


def select_edges(maps: Sequence[ScoreMap], grid: np.ndarray, *, smooth: int = 2) -> Selection:
    """The t whose seed borders follow the image's edges best: the mean over images of
    `edge_contrast`, averaged over +-`smooth` neighbouring candidates (the border of a stride-16
    CAM moves in jumps, so single candidates are noisy); confidence = 1 - median / max of it."""
    grid = np.asarray(grid, dtype=np.float64)
    usable = [m for m in maps if len(m.keys) > 0]
    if not usable:
        raise ValueError("no image of the sample has a class: nothing to threshold")
    gradients = [_image_gradient(m.image) if m.image is not None else None for m in usable]
    raw = np.full(grid.size, np.nan)
    for i, t in enumerate(grid):
        values = [edge_contrast(m, float(t), g) for m, g in zip(usable, gradients)]
        values = [v for v in values if np.isfinite(v)]  # images without a border at t say nothing
        if values:
            raw[i] = float(np.mean(values))
    kernel = np.ones(2 * smooth + 1)
    valid = np.isfinite(raw)
    summed = np.convolve(np.where(valid, raw, 0.0), kernel, mode="same")
    counts = np.convolve(valid.astype(np.float64), kernel, mode="same")
    with np.errstate(divide="ignore", invalid="ignore"):
        criterion = np.where(valid & (counts > 0), summed / counts, -np.inf)
    index = _middle_of_best(grid, criterion, maximise=True)
    finite = criterion[np.isfinite(criterion)]
    score = 1.0 - float(np.median(finite)) / float(criterion[index]) if criterion[index] > 0 else 0.0
    return Selection(
        "edges",
        float(grid[index]),
        float(np.clip(score, 0.0, 1.0)),
        dict(zip(grid.tolist(), np.where(np.isfinite(criterion), criterion, -1.0).tolist())),
    )


def label_agreement(label: np.ndarray, refined: np.ndarray, num_labels: int) -> float:
    """Mean over labels 0..num_labels-1 of IoU(label == l, refined == l); a label absent from
    both counts 0 (the image is known to hold every one of them: background and its classes)."""
    ious = []
    for value in range(num_labels):
        a, b = label == value, refined == value
        union = np.count_nonzero(a | b)
        ious.append(np.count_nonzero(a & b) / union if union else 0.0)
    return float(np.mean(ious))


def crf_agreement(
    score_map: ScoreMap, threshold: float, *, gt_prob: float = 0.7, kernels: CrfKernels = IR_LABEL_KERNELS
) -> float:
    """`label_agreement` of one image's seed label at `threshold` with its dense-CRF refinement
    (compact labels: 0 background, c+1 the image's c-th class)."""
    if score_map.image is None:
        raise ValueError("the crf selector needs the images (ScoreMap.image)")
    scores = np.asarray(score_map.scores)
    label = seed_label(scores, np.arange(scores.shape[0]), threshold)
    refined = crf_from_labels(score_map.image, label, scores.shape[0] + 1, gt_prob=gt_prob, kernels=kernels)
    return label_agreement(label, refined, scores.shape[0] + 1)


def select_crf(
    maps: Sequence[ScoreMap],
    grid: np.ndarray,
    *,
    coarse: int = 5,
    gt_prob: float = 0.7,
    kernels: CrfKernels = IR_LABEL_KERNELS,
) -> Selection:
    """The t of largest mean CRF agreement (see the module docstring).

    Cost: one dense CRF per image and visited candidate. Coarse to fine: every `coarse`-th
    candidate first, then every candidate within `coarse` steps of the best of those (about
    len(grid) / coarse + 2 * coarse CRFs per image instead of len(grid)); on a plateau of tied
    candidates, once more around its middle.
    """
    grid = np.asarray(grid, dtype=np.float64)
    usable = [m for m in maps if len(m.keys) > 0]
    if not usable:
        raise ValueError("no image of the sample has a class: nothing to threshold")
    criterion = np.full(grid.size, np.nan)

    def visit(indices: Sequence[int]) -> None:
        for i in indices:
            if np.isnan(criterion[i]):
                criterion[i] = np.mean(
                    [crf_agreement(m, float(grid[i]), gt_prob=gt_prob, kernels=kernels) for m in usable]
                )

    step = max(int(coarse), 1)
    visit(range(0, grid.size, step))
    best = int(np.nanargmax(criterion))
    visit(range(max(best - step + 1, 0), min(best + step, grid.size)))
    index = _middle_of_best(grid, criterion, maximise=True)
    best_value = np.nanmax(criterion)
    if np.count_nonzero(np.abs(criterion - best_value) <= TIE) > 1:
        # A plateau (ties): its middle is known to the coarse step only; look at its neighbours.
        visit(range(max(index - step + 1, 0), min(index + step, grid.size)))
        index = _middle_of_best(grid, criterion, maximise=True)
    visited = ~np.isnan(criterion)
    return Selection(
        "crf",
        float(grid[index]),
        float(criterion[index]),
        dict(zip(grid[visited].tolist(), criterion[visited].tolist())),
    )


def select_consensus(maps: Sequence[ScoreMap], grid: np.ndarray) -> Selection:
    """The mean of the `otsu` and `edges` thresholds (the value distribution and the image's
    contours: two independent cues), snapped to the nearest candidate; confidence = 1 - their
    distance (they agree: 1). Costs the two together (no CRF)."""
    grid = np.asarray(grid, dtype=np.float64)
    otsu, edges = select_otsu(maps, grid), select_edges(maps, grid)
    middle = (otsu.threshold + edges.threshold) / 2
    index = int(np.argmin(np.abs(grid - middle + 1e-12)))
    return Selection(
        "consensus",
        float(grid[index]),
        float(np.clip(1.0 - abs(otsu.threshold - edges.threshold), 0, 1)),
        {"otsu": otsu.threshold, "edges": edges.threshold},
    )


SELECTORS: dict[str, Callable[..., Selection]] = {
    "otsu": select_otsu,
    "stability": select_stability,
    "edges": select_edges,
    "crf": select_crf,
    "consensus": select_consensus,
}


def select_threshold(selector: str, maps: Sequence[ScoreMap], grid: np.ndarray, **options) -> Selection:
    """Run `SELECTORS[selector]` on a sample; ValueError naming the choices for an unknown one."""
    if selector not in SELECTORS:
        raise ValueError(f"unknown threshold selector {selector!r}; choose one of {', '.join(SELECTORS)}")
    return SELECTORS[selector](maps, np.asarray(grid, dtype=np.float64), **options)

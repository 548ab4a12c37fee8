"""The DeepLab training loss (spec §7.1, "Loss"): pixel cross-entropy with ignore 255 on every
multi-scale output, against the label resized to that output's size, summed."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = 255


def resize_labels(labels: Tensor, size: Sequence[int]) -> Tensor:
    """Nearest-resize label maps (B, H, W) int64 to `size` (h, w), values kept (255 stays 255).

    "nearest-exact" samples source pixel floor((i + 0.5) * H / h), the centre rule of PIL's
    NEAREST that deeplab-pytorch's `resize_labels` uses (torch's plain "nearest" takes floor(i * H / h)).
    """
    if tuple(labels.shape[-2:]) == tuple(size):
        return labels
    resized = F.interpolate(labels[:, None].float(), size=tuple(size), mode="nearest-exact")
    return resized[:, 0].long()


def _same(count: Tensor) -> Tensor:
    return count


def cross_entropy_ignore(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    count_over_ranks: Callable[[Tensor], Tensor] = _same,
) -> Tensor:
    """Mean cross-entropy over the pixels whose label is not `ignore_index`.

    logits: (B, C, h, w) float; labels: (B, h, w) int64 in 0..C-1 or ignore_index.
    Returns a scalar: sum of -log softmax(logits)[label] over valid pixels / their count, and 0
    (still differentiable, zero gradient) when no pixel is valid. Deviation: torch's mean reduction
    (deeplab-pytorch) gives 0/0 = NaN there, e.g. on a 0.5-scale output of an all-ignore crop.

    `count_over_ranks` maps this process's valid-pixel count to the divisor. Under DDP (which
    averages gradients over N ranks) it is the mean count over the ranks, so that the averaged
    gradient is that of (sum over every rank's pixels) / (their total count): the one-process mean
    over the whole batch, even when the ranks' crops hold different numbers of ignored pixels.
    """
    total = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="sum")
    count = count_over_ranks((labels != ignore_index).sum().float())
    return total / count.clamp(min=1)


def balanced_cross_entropy(
    logits: Tensor,
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    count_over_ranks: Callable[[Tensor], Tensor] = _same,
) -> Tensor:
    """Foreground/background-balanced cross-entropy (the CLIMS / CLIP-ES DeepLab option):
    (mean CE over background pixels + mean CE over foreground pixels) / 2, `ignore_index` left out.

    logits: (B, C, h, w); labels: (B, h, w) int64 in 0..C-1 or ignore_index. A part without pixels
    adds 0 (so an all-background batch gives half the plain mean). Keeps pseudo masks dominated by
    background from collapsing the network to background-only (the NaN / all-background reports).
    """
    per_pixel = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index, reduction="none")
    valid = labels != ignore_index
    parts = []
    for mask in (valid & (labels == 0), valid & (labels > 0)):
        count = count_over_ranks(mask.sum().float())
        parts.append((per_pixel * mask).sum() / count.clamp(min=1))
    return (parts[0] + parts[1]) / 2


def msc_loss(
    outputs: Tensor | Sequence[Tensor],
    labels: Tensor,
    ignore_index: int = IGNORE_INDEX,
    *,
    count_over_ranks: Callable[[Tensor], Tensor] = _same,
    balanced: bool = False,
) -> Tensor:
    """Sum over the logit maps of `cross_entropy_ignore(map, labels nearest-resized to the map)`
    (`balanced_cross_entropy` with balanced=True, seg.loss=balanced).

    outputs: one (B, C, h, w) map or the MSC training list [full, per-scale..., max];
    labels: (B, H, W) int64 at the input resolution (0..C-1, 255 ignored).
    """
    maps = [outputs] if isinstance(outputs, Tensor) else list(outputs)
    loss = balanced_cross_entropy if balanced else cross_entropy_ignore
    return torch.stack(
        [loss(m, resize_labels(labels, m.shape[-2:]), ignore_index, count_over_ranks=count_over_ranks) for m in maps]
    ).sum()

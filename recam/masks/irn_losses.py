"""IRN training losses: pair affinities and pair displacements against the affinity labels (spec §6b).

For every (direction d, source p) of a `PathIndex`, with labels bg_pos / fg_pos / neg from
`recam.masks.affinity.affinity_labels`:

* affinity a = 1 - max of sigmoid(edge) along the path; pos = -log(a + 1e-5),
  neg = -log(1 + 1e-5 - a);
* pair displacement delta = D(p) - D(p + d); dp_fg = |delta - d|, dp_bg = |delta|.

Each loss is a label-weighted mean over batch x directions x sources (x 2 channels for the
displacement), with the reference's +1e-5 in every denominator; golden `irn_forward_losses`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from recam.masks.affinity import edge_to_affinity
from recam.masks.path_index import PathIndex

# The reference's guard against log(0) and against empty label sets.
EPS = 1e-5


def pair_displacement(dp: Tensor, path_index: PathIndex) -> Tensor:
    """delta[b, c, d, s] = dp[b, c, src_s] - dp[b, c, src_s + search_dst[d]].

    dp: (B, 2, h, w) with (h, w) == path_index.size. Sources are the crop [0:h-rf, rf:w-rf].
    Returns (B, 2, n_dirs, n_src), directions in `path_index.search_dst` order.
    """
    if dp.dim() != 4 or tuple(dp.shape[-2:]) != path_index.size:
        raise ValueError(f"dp must be (B, C, h, w) with (h, w) = {path_index.size}, got {tuple(dp.shape)}")
    rf = path_index.radius_floor
    ch, cw = path_index.cropped_size
    src = dp[:, :, :ch, rf : rf + cw]
    # Slices of the map rather than flat-index gathers: no index tensor has to reach the device.
    dst = torch.stack(
        [dp[:, :, dy : dy + ch, rf + dx : rf + dx + cw] for dy, dx in path_index.search_dst.tolist()], dim=2
    )
    pair = src.unsqueeze(2) - dst
    return pair.reshape(pair.shape[0], pair.shape[1], pair.shape[2], -1)


def displacement_target(
    path_index: PathIndex, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None
) -> Tensor:
    """The offsets as a target: t[0, c, d, 0] = search_dst[d, c], shape (1, 2, n_dirs, 1)."""
    dst = torch.as_tensor(path_index.search_dst, dtype=dtype, device=device)
    return dst.t()[None, :, :, None]


def irn_losses(
    edge_logits: Tensor,
    dp: Tensor,
    bg_pos: Tensor,
    fg_pos: Tensor,
    neg: Tensor,
    path_index: PathIndex,
    *,
    path_indices: Sequence[Tensor] | None = None,
    counts: dict[str, Tensor] | None = None,
) -> dict[str, Tensor]:
    """The four IRN losses, their total and the per-pair maps (spec §6b; golden irn_forward_losses).

    edge_logits: (B, 1, h, w); dp: (B, 2, h, w) displacement (channel 0 = y, 1 = x);
    bg_pos, fg_pos, neg: (B, n_dirs, n_src) 0/1 float labels of the same path index;
    path_index: radius-r index of size (h, w); path_indices: its groups already on the device
    (`recam.masks.affinity.path_indices_to_torch`), to skip the copy each step.

    Returns scalars "pos_aff_loss", "neg_aff_loss", "dp_fg_loss", "dp_bg_loss", "total" =
    (pos + neg)/2 + (dp_fg + dp_bg)/2, and the maps "aff", "pos_aff_loss_map",
    "neg_aff_loss_map" (B, n_dirs, n_src), "pair_disp", "dp_fg_loss_map", "dp_bg_loss_map"
    (B, 2, n_dirs, n_src), "disp_target" (1, 2, n_dirs, 1). Sums run over the whole batch.

    counts: the label counts {"bg_pos", "fg_pos", "neg"} to divide by instead of this batch's own.
    Under torchrun the stage passes each count's mean over the ranks: DDP then averages
    sum_r / mean_r(count) over the ranks, which is sum / count over the whole global batch, as in
    one process (a per-rank mean would weigh a rank with few pairs like one with many).
    """
    aff = edge_to_affinity(torch.sigmoid(edge_logits), path_index, path_indices=path_indices)
    labels = {"bg_pos": bg_pos, "fg_pos": fg_pos, "neg": neg}
    for name, label in labels.items():
        if tuple(label.shape) != tuple(aff.shape):
            raise ValueError(f"{name} must have the affinity shape {tuple(aff.shape)}, got {tuple(label.shape)}")
    bg_pos, fg_pos, neg = (label.to(aff.dtype) for label in labels.values())

    pos_map = -torch.log(aff + EPS)
    neg_map = -torch.log(1.0 + EPS - aff)
    pair_disp = pair_displacement(dp, path_index)
    target = displacement_target(path_index, dtype=dp.dtype, device=dp.device)
    dp_fg_map = torch.abs(pair_disp - target)
    dp_bg_map = torch.abs(pair_disp)

    bg_sum, fg_sum, neg_sum = bg_pos.sum(), fg_pos.sum(), neg.sum()
    if counts is not None:
        bg_sum, fg_sum, neg_sum = counts["bg_pos"], counts["fg_pos"], counts["neg"]
    pos_aff_loss = ((bg_pos * pos_map).sum() / (bg_sum + EPS)) / 2 + ((fg_pos * pos_map).sum() / (fg_sum + EPS)) / 2
    neg_aff_loss = (neg * neg_map).sum() / (neg_sum + EPS)
    # The labels broadcast over the 2 displacement channels, hence the 2 in the denominators.
    dp_fg_loss = (dp_fg_map * fg_pos.unsqueeze(1)).sum() / (2 * fg_sum + EPS)
    dp_bg_loss = (dp_bg_map * bg_pos.unsqueeze(1)).sum() / (2 * bg_sum + EPS)
    total = (pos_aff_loss + neg_aff_loss) / 2 + (dp_fg_loss + dp_bg_loss) / 2
    return {
        "pos_aff_loss": pos_aff_loss,
        "neg_aff_loss": neg_aff_loss,
        "dp_fg_loss": dp_fg_loss,
        "dp_bg_loss": dp_bg_loss,
        "total": total,
        "aff": aff,
        "pos_aff_loss_map": pos_map,
        "neg_aff_loss_map": neg_map,
        "pair_disp": pair_disp,
        "dp_fg_loss_map": dp_fg_map,
        "dp_bg_loss_map": dp_bg_map,
        "disp_target": target,
    }


def mean_displacement(dp: Tensor) -> Tensor:
    """Mean of a displacement batch over batch and pixels, per channel: (B, 2, h, w) -> (2,).

    The reference averages these per-batch means over its inference loader after training and
    stores the result in the mean-shift buffer (`IRNet.set_mean_shift`).
    """
    return dp.mean(dim=(0, 2, 3))

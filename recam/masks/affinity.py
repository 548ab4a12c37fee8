"""Pairwise affinity labels and predicted affinities for IRN (spec §6b, "Affinity labels").

`reduce_label` and `affinity_labels` turn an IR label map into the three 0/1 pair labels IRN
trains on; `edge_to_affinity` turns a boundary probability map into the predicted affinity of
the same pairs, in the same channel order (the path-length groups of a `PathIndex`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from recam.masks.path_index import PathIndex

# The "unsure" / padding value of IR labels and crops (spec §6a, §6b).
IGNORE_INDEX = 255
# IRN labels are reduced to the stride-4 grid of the edge map.
LABEL_STRIDE = 4


def reduce_label(label: np.ndarray, stride: int = LABEL_STRIDE) -> np.ndarray:
    """Reduce a label map to the stride-`stride` grid by nearest-neighbour resizing (spec §6b).

    label: (H, W) uint8 (0 background, classes, 255 unsure).
    Returns (round(H / stride), round(W / stride)) uint8, rounding half to even as the
    reference's `np.round`. PIL's NEAREST resize, as the reference's `pil_rescale(label, 0.25, 0)`;
    for an exact factor 4 it picks pixel (4i + 2, 4j + 2), which a plain `label[::4, ::4]`
    would not (it picks (4i, 4j)).
    """
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W), got shape {label.shape}")
    # Python's round() rounds half to even, like np.round in the reference.
    out_h, out_w = round(label.shape[0] / stride), round(label.shape[1] / stride)
    resized = Image.fromarray(np.ascontiguousarray(label)).resize((out_w, out_h), resample=Image.NEAREST)
    return np.array(resized, dtype=label.dtype)  # a writable copy (torch.from_numpy warns on read-only)


def affinity_labels(
    reduced_label: np.ndarray, path_index: PathIndex, ignore_index: int = IGNORE_INDEX
) -> dict[str, np.ndarray]:
    """Pair labels of every (direction, source) from a reduced label map (spec §6b, Affinity labels).

    reduced_label: (H, W) or (B, H, W) integer labels with (H, W) == path_index.size.
    With a = label[src], b = label[dst] and valid = (a != ignore_index and b != ignore_index):
    bg_pos = valid & a == b & a == 0; fg_pos = valid & a == b & a > 0; neg = valid & a != b.
    Returns {"bg_pos", "fg_pos", "neg"}, each float32 0/1 of shape (n_dirs, n_src), or
    (B, n_dirs, n_src) for a batch.

    The reference tests `a < 21 and b < 21`; on VOC's labels (0..20 and 255) that is the same as
    `!= 255`. We test against `ignore_index` instead so a dataset with more classes keeps its
    labels valid.
    """
    if reduced_label.ndim not in (2, 3) or tuple(reduced_label.shape[-2:]) != path_index.size:
        raise ValueError(
            f"reduced_label must be (H, W) or (B, H, W) with (H, W) = {path_index.size}, "
            f"got shape {reduced_label.shape}"
        )
    flat = reduced_label.reshape(*reduced_label.shape[:-2], -1)
    label_src = flat[..., None, path_index.src_indices]  # (..., 1, n_src)
    label_dst = flat[..., path_index.dst_indices]  # (..., n_dirs, n_src)
    valid = (label_src != ignore_index) & (label_dst != ignore_index)
    equal = label_src == label_dst
    positive = equal & valid
    return {
        "bg_pos": (positive & (label_src == 0)).astype(np.float32),
        "fg_pos": (positive & (label_src > 0)).astype(np.float32),
        "neg": (~equal & valid).astype(np.float32),
    }


def path_indices_to_torch(path_index: PathIndex, device: torch.device | str | None = None) -> list[Tensor]:
    """The path-index groups as int64 tensors on `device`, for reuse across `edge_to_affinity` calls.

    At radius 10 on a 128x128 grid the groups hold about 28 M indices (some 220 MB), so a
    training loop moves them to the GPU once rather than every step.
    """
    return [torch.as_tensor(indices, dtype=torch.int64, device=device) for indices in path_index.path_indices]


def edge_to_affinity(edge: Tensor, path_index: PathIndex, *, path_indices: Sequence[Tensor] | None = None) -> Tensor:
    """Predicted affinity of every (direction, source) pair from a boundary map (spec §6b).

    edge: (h, w), (B, h, w) or (B, 1, h, w) float boundary probabilities in [0, 1] (IRN training
        passes sigmoid of the edge logits), (h, w) == path_index.size.
    path_indices: the groups of `path_indices_to_torch(path_index, edge.device)`, to skip the
        host-to-device copy; built from `path_index` when omitted.
    Returns (B, n_dirs, n_src) with B = 1 for an (h, w) edge:
    aff[b, d, s] = 1 - max over the points q of path d of edge[b, src_s + q], end points included.
    Directions follow `path_index.search_dst` (path-length groups concatenated in order).
    """
    if edge.dim() == 2:
        edge = edge[None]
    elif edge.dim() == 4:
        if edge.shape[1] != 1:
            raise ValueError(f"edge must have one channel, got shape {tuple(edge.shape)}")
        edge = edge[:, 0]
    if edge.dim() != 3 or tuple(edge.shape[-2:]) != path_index.size:
        raise ValueError(
            f"edge must be (h, w), (B, h, w) or (B, 1, h, w) with (h, w) = {path_index.size}, "
            f"got shape {tuple(edge.shape)}"
        )
    if path_indices is None:
        path_indices = path_indices_to_torch(path_index, edge.device)

    edge_flat = edge.reshape(edge.shape[0], -1)
    affinities = []
    for indices in path_indices:
        n_paths, length, n_src = indices.shape
        along_path = edge_flat.index_select(1, indices.reshape(-1)).view(-1, n_paths, length, n_src)
        # The reference takes this maximum with max_pool2d over the path axis. max(dim) gives the
        # same values and, like max_pool2d, sends the gradient to one arg-max point (amax would
        # split it between tied points).
        affinities.append(1 - along_path.max(dim=2).values)
    return torch.cat(affinities, dim=1)


def affinity_labels_torch(
    reduced_label: Tensor, src_indices: Tensor, dst_indices: Tensor, ignore_index: int = IGNORE_INDEX
) -> dict[str, Tensor]:
    """`affinity_labels` on the device, for a batch: reduced_label (B, H, W) integer tensor,
    src_indices (n_src,) and dst_indices (n_dirs, n_src) int64 tensors of a `PathIndex` of size
    (H, W). Returns {"bg_pos", "fg_pos", "neg"}, each (B, n_dirs, n_src) float32 0/1.

    The training loop builds the pair labels here rather than in the data loader: a 512 crop has
    152 x 13,090 pairs, 24 MB of float labels per image, against 16 KB for the reduced label.
    """
    flat = reduced_label.reshape(reduced_label.shape[0], -1).long()
    label_src = flat[:, None, src_indices]
    label_dst = flat[:, dst_indices]
    valid = (label_src != ignore_index) & (label_dst != ignore_index)
    equal = label_src == label_dst
    positive = equal & valid
    return {
        "bg_pos": (positive & (label_src == 0)).float(),
        "fg_pos": (positive & (label_src > 0)).float(),
        "neg": (~equal & valid).float(),
    }

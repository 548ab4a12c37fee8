"""SPG self-produced guidance masks and the SPG training loss (spg-spec.md §4-5).

Tensors in, tensors out; no device choice, no files. Mask values: 1 foreground, 0 background,
255 ignore (`IGNORE`). All masks are built at `size` x `size` (224 in the reference, whatever the
input size: spec §10 quirk 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = 255
MASK_SIZE = 224
MIN_FG_PIXELS = 30  # mark_obj: fewer foreground pixels than this -> fallback threshold
FALLBACK_RATIO = 0.7  # mark_obj: the fallback threshold is 0.7 * max of the map

# (delta_high, delta_low) of the code, which trained the released models (spec §4 "Paper versus code").
TARGET_B2 = (0.7, 0.05)  # from the attention map, supervises SPG-B2 (side4)
TARGET_B1 = (0.5, 0.05)  # from sigma(side4), supervises SPG-B1 (side3)
TARGET_C = (0.7, 0.1)  # from the fused (sigma(side3) + sigma(side4)) / 2, supervises SPG-C


def guidance_mask(
    maps: Tensor,
    high: float,
    low: float,
    *,
    carry_threshold: bool = True,
    min_pixels: int = MIN_FG_PIXELS,
    fallback: float = FALLBACK_RATIO,
) -> Tensor:
    """The reference `get_mask` (`mark_obj` then `mark_bg`), spec §4.

    maps: (B, H, W) float heat maps (any range; the comparisons run in maps.dtype, the thresholds
    rounded to that type, strictly). Returns (B, H, W) uint8 in {0, 1, 255}.
    1. M = 255. 2. t = high once per call; per image in batch order: pos = A_i > t; if
    pos.sum() < min_pixels: t = fallback * max(A_i) (a product in maps.dtype), pos = A_i > t;
    M_i[pos] = 1. 3. M[A < low] = 0 (background wins).
    carry_threshold=True is the reference quirk: t is not reset between images, so a fallback
    threshold applies to every later image of the batch; False resets t = high per image.
    """
    maps = maps.detach()
    mask = torch.full(maps.shape, IGNORE, dtype=torch.uint8, device=maps.device)
    high_t = torch.tensor(high, dtype=maps.dtype, device=maps.device)
    threshold = high_t
    for i in range(maps.shape[0]):
        if not carry_threshold:
            threshold = high_t
        pos = maps[i] > threshold
        if int(pos.sum()) < min_pixels:
            threshold = maps[i].max() * fallback
            pos = maps[i] > threshold
        mask[i][pos] = 1
    mask[maps < torch.tensor(low, dtype=maps.dtype, device=maps.device)] = 0
    return mask


def masked_bce(logits: Tensor, mask: Tensor) -> Tensor | None:
    """BCE-with-logits over the pixels with mask < 255, averaged over the whole batch at once
    (not per image), spec §5. logits: (B, H, W) float; mask: (B, H, W) uint8.
    Returns a scalar, or None when every pixel is ignored (the reference's mean over an empty set
    is NaN: spec §10 quirk 16, fixed by skipping the term)."""
    valid = mask != IGNORE
    if not bool(valid.any()):
        return None
    return F.binary_cross_entropy_with_logits(logits[valid], mask[valid].to(logits.dtype))


def upsample(maps: Tensor, size: int, align_corners: bool) -> Tensor:
    """Bilinear (B, C, h, w) -> (B, C, size, size). align_corners=True is PyTorch 0.3's only
    bilinear mode, which the reference ran on (spec §11); False is the same source on torch >= 0.4."""
    return F.interpolate(maps, size=(size, size), mode="bilinear", align_corners=align_corners)


def min_max(maps: Tensor) -> Tensor:
    """norm(x) = (x - min) / (max - min) over the last two axes, no epsilon (a constant map gives
    NaN, as in the reference; the read-outs that must not fail use `loc_maps(eps=...)`)."""
    low = maps.amin(dim=(-2, -1), keepdim=True)
    high = maps.amax(dim=(-2, -1), keepdim=True)
    return (maps - low) / (high - low)


def attention_map(class_maps: Tensor, label: Tensor, *, size: int = MASK_SIZE, align_corners: bool = True) -> Tensor:
    """`atten_map` = norm(up(class_maps)[b, label_b]): (B, K, h, w), (B,) int -> (B, size, size).

    The reference up-samples all K maps and then picks one (B x K x 224 x 224 memory); bilinear
    resizing acts per channel, so picking first is bit-identical (spec §10 quirk 18)."""
    picked = class_maps[torch.arange(class_maps.shape[0], device=class_maps.device), label.long()]
    return min_max(upsample(picked[:, None], size, align_corners)[:, 0])


def multi_class_attention_map(
    class_maps: Tensor, label: Tensor, *, size: int = MASK_SIZE, align_corners: bool = True
) -> Tensor:
    """Our extension for multi-label images (VOC-layout sets): the max over the image's classes
    of norm(up(class_maps[b, k])). (B, K, h, w), (B, K) multi-hot -> (B, size, size); equals
    `attention_map` on one-hot labels. An image without a class gets NaN (every pixel ignored)."""
    rows = []
    for b in range(class_maps.shape[0]):
        present = torch.nonzero(label[b] > 0).flatten()
        if present.numel() == 0:
            rows.append(class_maps.new_full((size, size), float("nan")))
            continue
        rows.append(min_max(upsample(class_maps[b, present][None], size, align_corners)[0]).amax(dim=0))
    return torch.stack(rows)


def spg_targets(
    atten_map: Tensor,
    side3: Tensor,
    side4: Tensor,
    *,
    size: int = MASK_SIZE,
    align_corners: bool = True,
    carry_threshold: bool = True,
) -> dict[str, Tensor]:
    """The three guidance targets of `get_loss` (spec §4 table), all (B, size, size) uint8.

    side4 (M_A) from the attention map at TARGET_B2; side3 (M_B) from sigma(up(side4)) at
    TARGET_B1 (the stagewise easy-to-hard step); out_seg (M_C) from the detached fused
    (sigma(up(side3)) + sigma(up(side4))) / 2 at TARGET_C. No gradient flows through a mask.
    side3, side4: (B, 1, h, w) logits.
    """
    up3 = upsample(side3, size, align_corners)[:, 0].detach()
    up4 = upsample(side4, size, align_corners)[:, 0].detach()
    sig3, sig4 = torch.sigmoid(up3), torch.sigmoid(up4)
    return {
        "side4": guidance_mask(atten_map, *TARGET_B2, carry_threshold=carry_threshold),
        "side3": guidance_mask(sig4, *TARGET_B1, carry_threshold=carry_threshold),
        "out_seg": guidance_mask((sig3 + sig4) / 2, *TARGET_C, carry_threshold=carry_threshold),
    }


def spg_loss(
    outputs: dict[str, Tensor],
    label: Tensor,
    *,
    size: int = MASK_SIZE,
    align_corners: bool = True,
    carry_threshold: bool = True,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> dict[str, Tensor]:
    """L = CE(logits, gt) + bce(up(side4), M_A) + bce(up(side3), M_B) + bce(up(out_seg), M_C), spec §5.

    outputs: {"logits": (B, K), "class_maps": (B, K, h, w), "side3", "side4", "out_seg": (B, 1, h, w)}
    (what `SPGNet.forward` returns); label: (B,) int 0-based classes (the reference), or (B, K)
    multi-hot (our extension for VOC-layout sets: CE against the uniform distribution over the
    image's classes, attention = max over them; identical to the reference on one-hot rows).
    weights: (CE, B2, B1, C), all 1 in the reference. A term whose pixels are all ignored is
    skipped (reported as 0). Returns {"loss", "cls", "side4", "side3", "back"} scalars plus the
    targets under "target_side4/side3/out_seg".
    """
    if label.dim() == 2:
        label = label.float()
        atten = multi_class_attention_map(outputs["class_maps"].detach(), label, size=size, align_corners=align_corners)
        label = label / label.sum(dim=1, keepdim=True).clamp(min=1)  # soft target of F.cross_entropy
    else:
        label = label.long()
        atten = attention_map(outputs["class_maps"].detach(), label, size=size, align_corners=align_corners)
    targets = spg_targets(
        atten,
        outputs["side3"],
        outputs["side4"],
        size=size,
        align_corners=align_corners,
        carry_threshold=carry_threshold,
    )
    parts = {"cls": F.cross_entropy(outputs["logits"], label)}
    total = weights[0] * parts["cls"]
    for name, key, weight in (
        ("side4", "side4", weights[1]),
        ("side3", "side3", weights[2]),
        ("back", "out_seg", weights[3]),
    ):
        term = masked_bce(upsample(outputs[key], size, align_corners)[:, 0], targets[key])
        parts[name] = term if term is not None else total.new_zeros(())
        if term is not None:
            total = total + weight * term
    return {"loss": total, **parts, "atten_map": atten, **{f"target_{k}": v for k, v in targets.items()}}

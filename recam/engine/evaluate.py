"""Classifier validation: mean multilabel soft-margin loss and mAP over a loader."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from recam.engine.progress import progress

from recam.eval.metrics import average_precision


@torch.no_grad()
def evaluate_classifier(
    model: nn.Module, loader: torch.utils.data.DataLoader, device: torch.device, max_batches: int | None = None
) -> dict[str, float]:
    """{"loss": mean BCE over images, "map": mean AP over classes with positives} (spec §2.6:
    the reference prints the val BCE; mAP is ours, a quality figure that does not depend on a
    threshold)."""
    scores, labels, loss_sum, seen = [], [], 0.0, 0
    for i, batch in enumerate(progress(loader, desc="validate", leave=False, dynamic_ncols=True)):
        if max_batches is not None and i >= max_batches:
            break
        logits = model(batch["image"].to(device))["logits"].float()
        label = batch["label"].to(device)
        loss_sum += F.multilabel_soft_margin_loss(logits, label, reduction="sum").item()
        seen += len(label)
        scores.append(logits.cpu().numpy())
        labels.append(label.cpu().numpy())
    if not seen:
        return {"loss": float("nan"), "map": float("nan")}
    ap = average_precision(np.concatenate(scores), np.concatenate(labels))
    return {"loss": loss_sum / seen, "map": float(ap["map"])}

"""Golden vectors of the ReCAM training head: normalised CAMs, class features, the SCE loss."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recam.models.recam_head import class_features, normalize_cams, recam_ce_loss

# Golden README tolerances for recam_class_features and recam_ce_loss.
RTOL, ATOL = 1e-5, 1e-6


def close(got: torch.Tensor, ref: np.ndarray) -> bool:
    return np.allclose(got.detach().numpy(), ref, rtol=RTOL, atol=ATOL)


def test_class_features_pipeline(golden):
    z = golden("recam_class_features")
    feats = torch.from_numpy(z["feature"])
    weight = torch.from_numpy(z["classifier_weight"])
    label = torch.from_numpy(z["label"])

    class_maps = F.conv2d(feats, weight[:, :, None, None])
    logits = class_maps.mean(dim=(2, 3))  # the head is linear, so GAP then W equals W then GAP
    cams = normalize_cams(F.relu(class_maps))
    pooled = class_features(cams, feats)

    assert close(logits, z["logits"])
    assert close(cams, z["cams"])
    assert close(pooled, z["class_features"])
    assert close(F.multilabel_soft_margin_loss(logits, label), z["loss_cls"])
    assert close(F.multilabel_soft_margin_loss(torch.from_numpy(z["logits"]), label), z["loss_cls"])

    # A class whose weight row is entirely <= 0 on non-negative features has an all-zero CAM,
    # which the +1e-5 keeps at zero (the file has such a row).
    dead = (weight <= 0).all(dim=1)
    assert dead.any()
    assert torch.all(cams[:, dead] == 0)


def check_ce_case(z: dict, feats_key: str, label_key: str, loss_key: str, acc_key: str) -> dict:
    out = recam_ce_loss(
        torch.from_numpy(z[feats_key]), torch.from_numpy(z["predictor_weight"]), torch.from_numpy(z[label_key])
    )
    assert close(out["loss"], z[loss_key])
    assert close(out["acc"], z[acc_key])
    return out


def test_recam_ce_loss_rows(golden):
    z = golden("recam_ce_loss")
    out = check_ce_case(z, "class_features", "label", "loss", "acc")
    batch = z["label"].shape[0]
    for i in range(batch):
        rows = out["image_index"] == i
        np.testing.assert_array_equal(out["targets"][rows].numpy(), z[f"row{i}_classes"])
        assert close(out["logits"][rows], z[f"row{i}_logits"])
        assert close(out["ce_per_image"][i], z[f"row{i}_ce"])


def test_recam_ce_loss_with_empty_image(golden):
    z = golden("recam_ce_loss")
    out = check_ce_case(z, "class_features_with_empty", "label_with_empty", "loss_with_empty", "acc_with_empty")
    empty = ~(z["label_with_empty"] > 0).any(axis=1)
    assert empty.any()
    # The empty image adds 0 but still counts in B: loss = (B - #empty)/B of the loss without it.
    batch = z["label_with_empty"].shape[0]
    assert close(out["loss"], z["loss"] * (batch - empty.sum()) / batch)
    assert torch.all(out["ce_per_image"][torch.from_numpy(empty)] == 0)

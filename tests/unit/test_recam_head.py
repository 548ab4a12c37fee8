"""ReCAM head: fast class features against the materialised form, normalisation, the SCE loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recam.models.recam_head import (
    class_features,
    class_features_materialized,
    normalize_cams,
    recam_ce_loss,
)


def random_inputs(seed: int, batch: int = 3, classes: int = 5, channels: int = 7, height: int = 4, width: int = 6):
    gen = torch.Generator().manual_seed(seed)
    cams = torch.rand(batch, classes, height, width, generator=gen, dtype=torch.float64)
    feats = torch.randn(batch, channels, height, width, generator=gen, dtype=torch.float64).relu()
    return cams, feats


def test_class_features_equals_materialised_values_and_gradients():
    cams, feats = random_inputs(0)
    upstream = torch.randn(cams.shape[0], cams.shape[1], feats.shape[1], dtype=torch.float64)
    grads = []
    for fn in (class_features, class_features_materialized):
        c, f = cams.clone().requires_grad_(), feats.clone().requires_grad_()
        out = fn(c, f)
        (out * upstream).sum().backward()
        grads.append((out.detach(), c.grad, f.grad))
    (fast, fast_dc, fast_df), (slow, slow_dc, slow_df) = grads
    assert fast.shape == (cams.shape[0], cams.shape[1], feats.shape[1])
    torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_dc, slow_dc, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(fast_df, slow_df, rtol=1e-12, atol=1e-12)


def test_class_features_float32_close_to_float64():
    cams, feats = random_inputs(1, batch=2, classes=4, channels=16, height=8, width=8)
    torch.testing.assert_close(
        class_features(cams.float(), feats.float()).double(),
        class_features_materialized(cams, feats),
        rtol=1e-5,
        atol=1e-6,
    )


def test_class_features_of_constant_cam_is_global_average():
    _, feats = random_inputs(2)
    ones = torch.ones(feats.shape[0], 1, *feats.shape[2:], dtype=feats.dtype)
    torch.testing.assert_close(class_features(ones, feats)[:, 0], feats.mean(dim=(2, 3)))


def test_normalize_cams_range_zero_maps_and_gradient_through_max():
    cams, _ = random_inputs(3)
    cams[1, 2] = 0.0
    normalised = normalize_cams(cams)
    peak = normalised.amax(dim=(2, 3))
    assert torch.all(peak < 1) and torch.all(normalised >= 0)
    assert torch.all(normalised[1, 2] == 0)
    others = torch.ones_like(peak, dtype=torch.bool)
    others[1, 2] = False
    torch.testing.assert_close(peak[others], torch.full_like(peak[others], 1.0), rtol=0, atol=1e-4)

    # Not detached: the gradient differs from the one with the max held constant.
    live = cams.clone().requires_grad_()
    normalize_cams(live).sum().backward()
    held = cams.clone().requires_grad_()
    (held / (held.amax(dim=(2, 3), keepdim=True).detach() + 1e-5)).sum().backward()
    assert not torch.allclose(live.grad, held.grad)


def loop_ce_loss(class_feats: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """The reference's per-image loop, written out as a test oracle."""
    total, correct, rows = 0.0, 0, 0
    for feats, label in zip(class_feats, labels):
        classes = torch.nonzero(label > 0).flatten()
        if classes.numel() == 0:
            continue
        logits = feats[classes] @ weight.t()
        total = total + F.cross_entropy(logits, classes)
        correct += int((logits.argmax(dim=1) == classes).sum())
        rows += classes.numel()
    return float(total) / labels.shape[0], correct / rows


def test_recam_ce_loss_matches_per_image_loop():
    gen = torch.Generator().manual_seed(4)
    batch, classes, channels = 6, 5, 8
    feats = torch.randn(batch, classes, channels, generator=gen, dtype=torch.float64)
    weight = torch.randn(classes, channels, generator=gen, dtype=torch.float64)
    labels = (torch.rand(batch, classes, generator=gen) > 0.5).double()
    labels[2] = 0  # an image without classes: skipped, still counted in B
    labels[3] = 1
    out = recam_ce_loss(feats, weight, labels)
    loss, acc = loop_ce_loss(feats, weight, labels)
    assert abs(out["loss"].item() - loss) < 1e-12
    assert abs(out["acc"].item() - acc) < 1e-12
    assert out["ce_per_image"][2] == 0
    # The 1x1-conv form of the predictor weight gives the same loss.
    conv = recam_ce_loss(feats, weight[:, :, None, None], labels)
    assert conv["loss"].item() == out["loss"].item()


def test_recam_ce_loss_gradient_reaches_features_and_weight():
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 4, 3, generator=gen, requires_grad=True)
    weight = torch.randn(4, 3, generator=gen, requires_grad=True)
    labels = torch.tensor([[1.0, 0, 1, 0], [0, 0, 0, 0]])
    recam_ce_loss(feats, weight, labels)["loss"].backward()
    assert feats.grad[0, [0, 2]].abs().sum() > 0
    assert torch.all(feats.grad[0, [1, 3]] == 0) and torch.all(feats.grad[1] == 0)
    assert weight.grad.abs().sum() > 0


def test_recam_ce_loss_without_any_positive_class():
    feats = torch.randn(2, 3, 4, requires_grad=True)
    out = recam_ce_loss(feats, torch.randn(3, 4), torch.zeros(2, 3))
    assert out["loss"].item() == 0.0 and torch.isnan(out["acc"])
    out["loss"].backward()
    assert torch.all(feats.grad == 0)

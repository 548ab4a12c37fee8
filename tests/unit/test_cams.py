"""The CAM family (recam/cams): shapes, ranges, hooks, known answers, batched = per-channel forms."""

from __future__ import annotations

import copy
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from recam.cams.ablationcam import ablation_cam
from recam.cams.cam import cam, normalize_max, normalize_minmax, resize_maps
from recam.cams.gradcam import activation_gradients, grad_cam, grad_cam_plusplus, smooth_grad_cam_plusplus
from recam.cams.guided import deconvnet, guided_backprop, guided_grad_cam, input_gradients
from recam.cams.hooks import capture, hook_count, logits_of, relu_backward_rule
from recam.cams.methods import CAM_METHODS, compute_cams, method_options
from recam.cams.scorecam import channel_masks, score_cam, ss_cam, top_channels
from recam.models.cam_net import build_cam_net
from tests.unit.tiny_cnn import SmallCnn, TinyCnn, scene

# Options that keep the noisy methods fast and the same in every test.
FAST = {"n_samples": 2, "chunk_size": 3}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return TinyCnn().eval()


@pytest.fixture(scope="module")
def small():
    return SmallCnn().eval()


@pytest.fixture(scope="module")
def cam_net():
    torch.manual_seed(0)
    return build_cam_net(arch="resnet18", num_classes=5, fixed_bn=False, pretrained="none").eval()


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_shapes_ranges_and_per_image_classes(method: str, tiny) -> None:
    images, _ = scene(batch=3)
    images[1] = images[1].flip(-1)
    maps = compute_cams(method, tiny, "features", images, [[0, 1], [1, 0], [0, 0]], **FAST)
    assert maps.shape == (3, 2, 16, 16) and maps.dtype == torch.float32
    assert torch.isfinite(maps).all() and (maps >= 0).all() and maps.amax() > 0
    # (B, K) ids: image 1 asks for classes in the other order, image 2 twice for class 0.
    torch.testing.assert_close(maps[2, 0], maps[2, 1])
    shared = compute_cams(method, tiny, "features", images, [0, 1], **FAST)
    torch.testing.assert_close(maps[0], shared[0])
    torch.testing.assert_close(maps[1].flip(0), shared[1])
    assert compute_cams(method, tiny, "features", images, torch.zeros(3, 0, dtype=torch.int64), **FAST).shape == (
        3,
        0,
        16,
        16,
    )


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_each_method_finds_the_object_it_is_asked_for(method: str, tiny) -> None:
    """Known answer: the red square for class 0, the blue one for class 1. Bound: IoU >= 0.9 of the
    max-normalised map, resized to the image, thresholded at 0.5 (all methods reach 1.0 today)."""
    images, masks = scene()
    maps = normalize_max(resize_maps(compute_cams(method, tiny, "features", images, [0, 1], **FAST), (32, 32)))[0]
    for k in range(2):
        predicted = maps[k] > 0.5
        iou = (predicted & masks[k]).sum() / (predicted | masks[k]).sum()
        assert iou >= 0.9, (method, k, float(iou))


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_hooks_are_removed_after_use_and_after_an_error(method: str, tiny) -> None:
    images, _ = scene()
    tiny.train()
    compute_cams(method, tiny, "features", images, [0], **FAST)
    assert hook_count(tiny) == 0 and tiny.training and tiny.features[1].inplace
    with pytest.raises((RuntimeError, IndexError)):
        compute_cams(method, tiny, "features", images, [7], **FAST)  # no class 7
    assert hook_count(tiny) == 0 and tiny.training
    tiny.eval()


def test_guided_hooks_are_removed_and_relus_restored_after_an_error(tiny) -> None:
    images, _ = scene()
    for function in (guided_backprop, deconvnet):
        with pytest.raises((RuntimeError, IndexError)):
            function(tiny, images, [9])
        assert hook_count(tiny) == 0 and tiny.features[1].inplace
    with pytest.raises(ValueError, match="unknown ReLU rule"):
        with relu_backward_rule(tiny, "nope"):
            pass
    with pytest.raises(ValueError, match="no layer"):
        grad_cam(tiny, "featurez", images, [0])
    with capture(tiny.features) as captured:
        pass
    with pytest.raises(RuntimeError, match="did not run"):
        captured.get()


def test_normalisations() -> None:
    maps = torch.tensor([[[[0.0, 2.0], [1.0, 4.0]], [[0.0, 0.0], [0.0, 0.0]]]])
    torch.testing.assert_close(normalize_max(maps)[0, 0], torch.tensor([[0.0, 2.0], [1.0, 4.0]]) / (4 + 1e-5))
    assert normalize_max(maps)[0, 1].abs().max() == 0 and normalize_max(maps).max() < 1
    torch.testing.assert_close(
        normalize_minmax(maps - 1.0)[0, 0], torch.tensor([[0.0, 0.5], [0.25, 1.0]]), atol=1e-6, rtol=0
    )
    assert resize_maps(maps, (4, 6)).shape == (1, 2, 4, 6)


def test_cam_on_camnet_equals_the_class_maps_of_the_seed_path(cam_net) -> None:
    """Our CamNet (dict output) through the library CAM equals relu(class_maps) used by seeds/cam."""
    images = torch.randn(2, 3, 48, 64)
    maps = cam(cam_net, "backbone.layer4", images, [4, 1])
    expected = F.relu(cam_net.class_maps(cam_net.backbone(images)))[:, [4, 1]]
    torch.testing.assert_close(maps, expected.detach())


def test_grad_cam_equals_cam_behind_global_average_pooling(cam_net) -> None:
    """Known answer: with GAP + a linear head, dY_k/dA_c(i, j) = W_kc / (h w), so Grad-CAM =
    CAM / (h w) and XGrad-CAM's and LayerCAM's normalised maps equal CAM's for positive weights."""
    images = torch.randn(1, 3, 48, 48)
    reference = cam(cam_net, "backbone.layer4", images, [0, 2])
    torch.testing.assert_close(
        grad_cam(cam_net, "backbone.layer4", images, [0, 2]) * 9, reference, atol=1e-5, rtol=1e-4
    )
    a, g, scores = activation_gradients(cam_net, "backbone.layer4", images, [0, 2])
    weight = cam_net.classifier.weight.flatten(1)[[0, 2]]
    torch.testing.assert_close(g[0], (weight / 9)[:, :, None, None].expand_as(g[0]))
    torch.testing.assert_close(scores, cam_net(images)["logits"][:, [0, 2]].detach())


def test_grad_cam_plusplus_closed_form_behind_global_average_pooling(cam_net) -> None:
    """Our choice (paper eq. 19, sum of A times g^3 at the pixel): with g_c = W_kc / hw constant,
    alpha_c = 1 / (2 + S_c g_c) and w_c = hw * alpha_c * relu(g_c), S_c = sum_ij A_c."""
    images = torch.randn(1, 3, 48, 48)
    a, _, _ = activation_gradients(cam_net, "backbone.layer4", images, [3])
    g = cam_net.classifier.weight.flatten(1)[3] / 9
    total = a[0].sum(dim=(-2, -1))
    weights = 9 * F.relu(g) / (2 + total * g)
    expected = F.relu(torch.einsum("c,chw->hw", weights, a[0]))
    torch.testing.assert_close(
        grad_cam_plusplus(cam_net, "backbone.layer4", images, [3])[0, 0], expected, atol=1e-5, rtol=1e-4
    )


def _score_cam_one_forward_per_channel(model, layer, images, class_ids):
    """Reference Score-CAM, written out: one forward per (image, channel), nothing shared."""
    with torch.no_grad(), capture(model.get_submodule(layer)) as captured:
        model(images)
    activations = captured.get()
    out = torch.zeros(images.shape[0], len(class_ids), *activations.shape[-2:])
    for b in range(images.shape[0]):
        scores = []
        for c in range(activations.shape[1]):
            channel = activations[b, c]
            mask = (channel - channel.min()) / (channel.max() - channel.min() + 1e-8)
            mask = F.interpolate(mask[None, None], size=images.shape[-2:], mode="bilinear", align_corners=False)
            with torch.no_grad():
                scores.append(logits_of(model(images[b : b + 1] * mask))[0, class_ids])
        weights = torch.stack(scores).softmax(dim=0)  # (C, K): softmax over channels
        out[b] = F.relu(torch.einsum("ck,chw->khw", weights, activations[b]))
    return out


def _ablation_one_forward_per_channel(model, layer, images, class_ids):
    """Reference Ablation-CAM: zero one channel with a hook, run the whole image, one at a time."""
    module = model.get_submodule(layer)
    with torch.no_grad(), capture(module) as captured:
        base = logits_of(model(images))[:, class_ids]
    activations = captured.get()
    out = torch.zeros(images.shape[0], len(class_ids), *activations.shape[-2:])
    for b in range(images.shape[0]):
        drops = []
        for c in range(activations.shape[1]):

            def zero(m, i, o, c=c):
                o = o.clone()
                o[:, c] = 0
                return o

            handle = module.register_forward_hook(zero)
            with torch.no_grad():
                drops.append(base[b] - logits_of(model(images[b : b + 1]))[0, class_ids])
            handle.remove()
        weights = torch.stack(drops) / base[b].abs()
        out[b] = F.relu(torch.einsum("ck,chw->khw", weights, activations[b]))
    return out


def test_batched_score_cam_equals_one_forward_per_channel(small) -> None:
    torch.manual_seed(1)
    images = torch.randn(2, 3, 32, 40)
    reference = _score_cam_one_forward_per_channel(small, "body", images, [1, 3])
    for chunk in (1, 7, 4096):
        torch.testing.assert_close(
            score_cam(small, "body", images, [1, 3], chunk_size=chunk), reference, atol=1e-5, rtol=1e-4
        )


def test_batched_ablation_cam_equals_one_forward_per_channel(small) -> None:
    torch.manual_seed(2)
    images = torch.randn(2, 3, 32, 32)
    reference = _ablation_one_forward_per_channel(small, "body", images, [0, 4])
    for chunk in (1, 5, 100):
        # Score drops are differences of logits: float32 cancellation, so the tolerance is relative
        # to the map's maximum.
        torch.testing.assert_close(
            ablation_cam(small, "body", images, [0, 4], chunk_size=chunk),
            reference,
            atol=1e-4 * float(reference.max()),
            rtol=1e-4,
        )


def test_top_k_keeps_the_channels_of_largest_variance(small) -> None:
    images = torch.randn(1, 3, 32, 32)
    with torch.no_grad(), capture(small.body) as captured:
        small(images)
    activations = captured.get()
    kept = top_channels(activations, 5)
    variance = activations.flatten(2).var(dim=-1)[0]
    assert set(kept[0].tolist()) == set(variance.argsort(descending=True)[:5].tolist())
    assert top_channels(activations, None).shape == (1, 24) and top_channels(activations, 10_000).shape == (1, 24)
    masks = channel_masks(activations)
    assert masks.min() >= 0 and masks.max() <= 1
    full = score_cam(small, "body", images, [2])
    torch.testing.assert_close(score_cam(small, "body", images, [2], top_k=24), full)
    # With k channels the weights are a softmax over those k only: the map is a sum of k channels.
    few = score_cam(small, "body", images, [2], top_k=1)
    channel = activations[0, kept[0, 0]]
    torch.testing.assert_close(few[0, 0], F.relu(channel))


def test_score_cam_probability_weighting_is_the_class_softmax(tiny) -> None:
    images, _ = scene()
    with torch.no_grad(), capture(tiny.features) as captured:
        tiny(images)
    activations = captured.get()
    masks = channel_masks(activations)
    probs = []
    for c in range(4):
        up = F.interpolate(masks[:, c : c + 1], size=(32, 32), mode="bilinear", align_corners=False)
        with torch.no_grad():
            probs.append(tiny(images * up).softmax(dim=-1)[0, 1])
    expected = F.relu(torch.einsum("c,chw->hw", torch.stack(probs), activations[0]))
    torch.testing.assert_close(score_cam(tiny, "features", images, [1], weighting="probability")[0, 0], expected)
    with pytest.raises(ValueError, match="weighting"):
        score_cam(tiny, "features", images, [1], weighting="odd")


@pytest.mark.parametrize("method", ["smoothgradcampp", "sscam"])
def test_noisy_methods_follow_their_seed(method: str, small) -> None:
    torch.manual_seed(3)
    images = torch.randn(1, 3, 32, 32)
    options = {"n_samples": 2, "top_k": 16, "chunk_size": 8}
    layer = "body.1"  # at `body` the gradients would not depend on the input (GAP + linear head)
    first = compute_cams(method, small, layer, images, [1], seed=7, **options)
    torch.testing.assert_close(compute_cams(method, small, layer, images, [1], seed=7, **options), first)
    assert not torch.allclose(compute_cams(method, small, layer, images, [1], seed=8, **options), first)


def test_smooth_grad_cam_plusplus_without_noise_is_grad_cam_plusplus(small) -> None:
    images = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(
        smooth_grad_cam_plusplus(small, "body.1", images, [2], n_samples=3, noise_std=0.0),
        grad_cam_plusplus(small, "body.1", images, [2]),
        atol=1e-5,
        rtol=1e-4,
    )
    with pytest.raises(ValueError, match="n_samples"):
        ss_cam(small, "body", images, [2], n_samples=0)


def test_guided_backprop_deconvnet_and_guided_grad_cam(tiny) -> None:
    """Known answer on the one-ReLU TinyCnn, whose upstream gradient at the ReLU is the constant
    fc.weight[k] / hw: guided backprop = the plain gradient of the same net with the negative fc
    weights set to 0; deconvnet = that, with the ReLU's forward mask removed as well."""
    images, _ = scene(batch=2)
    positive = copy.deepcopy(tiny)
    with torch.no_grad():
        positive.fc.weight.clamp_(min=0)
    no_mask = copy.deepcopy(positive)
    no_mask.features[1] = nn.Identity()

    def plain_gradient(model):
        x = images.clone().requires_grad_(True)
        return torch.autograd.grad(model(x)[:, 0].sum(), x)[0]

    guided = guided_backprop(tiny, images, [0])
    assert guided.shape == (2, 1, 3, 32, 32)
    torch.testing.assert_close(guided[:, 0], plain_gradient(positive))
    torch.testing.assert_close(deconvnet(tiny, images, [0])[:, 0], plain_gradient(no_mask))
    torch.testing.assert_close(input_gradients(tiny, images, [0], rule="guided"), guided)
    heat = resize_maps(normalize_max(grad_cam(tiny, "features", images, [0])), (32, 32))
    torch.testing.assert_close(guided_grad_cam(tiny, "features", images, [0]), guided * heat.unsqueeze(2))
    assert hook_count(tiny) == 0 and tiny.features[1].inplace


def test_method_options_and_unknown_names() -> None:
    assert method_options("scorecam") == ("chunk_size", "top_k", "weighting")
    assert set(method_options("sscam")) >= {"seed", "n_samples", "noise_std"}
    assert method_options("gradcam") == ()
    with pytest.raises(ValueError, match="unknown CAM method"):
        compute_cams("gradcam2", nn.Identity(), "x", torch.zeros(1), [0])

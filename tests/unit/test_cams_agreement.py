"""Agreement with pytorch-grad-cam (`grad-cam`) and torchcam wherever the definitions coincide.

Model: torchvision resnet18 (weights=None, seed 0, eval). Its fc weights are scaled by 100 so that
the class-score gradients are O(1): pytorch-grad-cam adds eps = 1e-6 and torchcam 1e-8 inside
Grad-CAM++'s denominator (2 g^2 + ...), which with a random net's O(1e-4) gradients would dominate
it. Each library's post-processing is replayed on our raw maps (docs/cams.md, "Agreement"):

* pytorch-grad-cam: ReLU, min-max per map, bilinear resize to the input (cv2), min-max again.
* torchcam: ReLU (not for CAM), min-max per map at the layer's resolution (eps 1e-8).

Stated tolerance: max abs difference 1e-4 between maps in [0, 1] (CAM: 1e-4 of the map's
maximum, compared before normalisation). Measured: 3e-7 to 5e-5 (docs/cams.md).
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torchvision

from recam.cams.cam import normalize_minmax, resize_maps
from recam.cams.hooks import hook_count
from recam.cams.methods import compute_cams

pytorch_grad_cam = pytest.importorskip("pytorch_grad_cam")
torchcam_methods = pytest.importorskip("torchcam.methods")
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget  # noqa: E402

TIGHT = 1e-4


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        model.fc.weight.mul_(100)
    return model


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))


CLASSES = [3, 7]  # one class per image


def ours(method: str, model, layer: str, x: torch.Tensor, **options) -> torch.Tensor:
    """Our raw maps (B, h, w) for class CLASSES[b] of image b."""
    return compute_cams(method, model, layer, x, [[c] for c in CLASSES[: x.shape[0]]], **options)[:, 0]


def as_grad_cam_lib(raw: torch.Tensor, size) -> torch.Tensor:
    """pytorch-grad-cam's post-processing: min-max, resize to the input, min-max (eps 1e-7)."""
    return normalize_minmax(resize_maps(normalize_minmax(raw.unsqueeze(1)), size))[:, 0]


def grad_cam_lib(cls, model, layer: str, x: torch.Tensor, **attributes) -> torch.Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with cls(model=model, target_layers=[model.get_submodule(layer)]) as extractor:
            for name, value in attributes.items():
                setattr(extractor, name, value)
            maps = extractor(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in CLASSES[: x.shape[0]]])
    return torch.from_numpy(maps)


def torchcam_lib(cls, model, layer: str, x: torch.Tensor, seed: int = 0, normalized: bool = True, **options):
    with cls(model, target_layer=layer, **options) as extractor:
        scores = model(x)
        torch.manual_seed(seed)  # the noisy extractors draw from the global generator
        maps = extractor(class_idx=CLASSES[: x.shape[0]], scores=scores, normalized=normalized)[0]
    return maps.detach()


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize(
    "method, name",
    [("gradcam", "GradCAM"), ("gradcampp", "GradCAMPlusPlus"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")],
)
def test_gradient_methods_agree_with_pytorch_grad_cam(method, name, layer, resnet, images) -> None:
    reference = grad_cam_lib(getattr(pytorch_grad_cam, name), resnet, layer, images)
    mine = as_grad_cam_lib(ours(method, resnet, layer, images), images.shape[-2:])
    assert (mine - reference).abs().max() < TIGHT
    assert hook_count(resnet) == 0


@pytest.mark.parametrize("layer", ["layer3", "layer4"])
@pytest.mark.parametrize("method, name", [("gradcam", "GradCAM"), ("xgradcam", "XGradCAM"), ("layercam", "LayerCAM")])
def test_gradient_methods_agree_with_torchcam(method, name, layer, resnet, images) -> None:
    reference = torchcam_lib(getattr(torchcam_methods, name), resnet, layer, images)
    mine = normalize_minmax(ours(method, resnet, layer, images), eps=1e-8)
    assert (mine - reference).abs().max() < TIGHT


def test_cam_agrees_with_torchcam_up_to_the_relu(resnet, images) -> None:
    """torchcam's CAM has no ReLU; compared before normalisation (normalized=False) after one."""
    reference = torch.relu(
        torchcam_lib(torchcam_methods.CAM, resnet, "layer4", images, normalized=False, fc_layer="fc")
    )
    mine = ours("cam", resnet, "layer4", images)
    assert (mine - reference).abs().max() < TIGHT * float(reference.max())


def test_smooth_grad_cam_plusplus_agrees_with_torchcam_where_the_definitions_meet(resnet, images) -> None:
    """torchcam sums g^3 * A over positions in alpha's denominator, weights ReLU(g) of the last
    noisy sample and sums the activations of the last noisy forward; we follow the paper (sum of A
    times g^3 at the pixel, the mean of g over the samples, the clean image's activations). Behind
    GAP + fc (layer4) the gradient is constant over positions and does not depend on the input, so
    the two meet when the noise is too small to change the activations (std 1e-6): what is compared
    is then the averaging of g^2 and g^3 over samples and alpha."""
    reference = torchcam_lib(
        torchcam_methods.SmoothGradCAMpp, resnet, "layer4", images[:1], seed=5, num_samples=2, std=1e-6
    )
    mine = normalize_minmax(
        ours("smoothgradcampp", resnet, "layer4", images[:1], n_samples=2, noise_std=1e-6, seed=5), eps=1e-8
    )
    assert (mine - reference).abs().max() < TIGHT


def test_score_cam_agrees_with_torchcam(resnet) -> None:
    """torchcam builds the masks as we do (min-max at the layer's resolution, then bilinear
    upsampling with align_corners=False). pytorch-grad-cam upsamples first, with align_corners=True,
    then normalises: its masks differ, and so do its maps (docs/cams.md: 0.01-0.15 max abs
    difference measured, larger for coarser maps), so it is not compared."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    raw = ours("scorecam", resnet, "layer1", x, chunk_size=64)
    reference = torchcam_lib(torchcam_methods.ScoreCAM, resnet, "layer1", x, batch_size=64)
    assert (normalize_minmax(raw, eps=1e-8) - reference).abs().max() < TIGHT


def test_ss_cam_agrees_with_torchcam_with_the_same_noise(resnet) -> None:
    """Same seed, same draws: torchcam draws one (B, C, H, W) noise tensor per sample from the global
    generator; we draw one (n, 1, H, W) tensor per chunk, the same numbers when one chunk holds all
    B * C masks."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    raw = ours("sscam", resnet, "layer1", x, chunk_size=64, n_samples=2, seed=11)
    reference = torchcam_lib(torchcam_methods.SSCAM, resnet, "layer1", x, seed=11, batch_size=64, num_samples=2)
    assert (normalize_minmax(raw, eps=1e-8) - reference).abs().max() < TIGHT


def test_ablation_cam_agrees_with_pytorch_grad_cam(resnet) -> None:
    """Both zero the channel (the layer's outputs are >= 0) and divide the score drop by the score,
    which is positive for these classes (we divide by its absolute value)."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    assert (resnet(x)[0, CLASSES[0]] > 0).item()
    reference = grad_cam_lib(pytorch_grad_cam.AblationCAM, resnet, "layer1", x, batch_size=64)
    mine = as_grad_cam_lib(ours("ablationcam", resnet, "layer1", x, chunk_size=64), x.shape[-2:])
    assert (mine - reference).abs().max() < TIGHT

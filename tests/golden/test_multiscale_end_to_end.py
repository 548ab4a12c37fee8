"""Golden `multiscale_cam_end_to_end`: RGB image -> ReCAM seeds through our export path
(multi-scale inputs, closed-form ResNet-50, W (.) V weight, batched flip pair, fusion)."""

from __future__ import annotations

import numpy as np
import torch

from recam.cams.fusion import combine_weights, fuse_flip
from recam.data.datasets import collate_multiscale, multiscale_inputs
from recam.models.cam_net import build_cam_net
from recam.stages.seeds import export_batch
from tests.golden.closed_form import assign_closed_form, backbone_tensor_names

CASE = "multiscale_cam_end_to_end"
MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _atol(ref: np.ndarray) -> float:
    return 1e-4 * max(1.0, float(np.abs(ref).max()))


def _model_and_weight(num_classes: int):
    model = build_cam_net(arch="resnet50", num_classes=num_classes, output_stride=16, pretrained="none")
    names = backbone_tensor_names("resnet50")
    assign_closed_form(model.backbone, names)
    assign_closed_form(model, ["classifier.weight"], start_index=len(names))
    k, c = model.classifier.weight.shape[:2]
    index = np.arange(k * c, dtype=np.float64).reshape(k, c)  # 2048*k + c for C = 2048
    predictor = torch.from_numpy(np.sin(0.53 * index + 1.3).astype(np.float32))
    return model.eval(), predictor, combine_weights(model.classifier.weight.detach().flatten(1), predictor)


def test_multiscale_end_to_end(golden) -> None:
    g = golden(CASE)
    model, predictor, weight = _model_and_weight(num_classes=g["label"].shape[0])
    np.testing.assert_allclose(predictor.double().sum().item(), float(g["predictor_weight_sum"]), rtol=1e-9)
    np.testing.assert_array_equal(predictor.flatten()[:4].numpy(), g["predictor_weight_first4"])

    image = g["image"]
    inputs = multiscale_inputs(image, [float(s) for s in g["scales"]], MEAN, STD)
    for j, x in enumerate(inputs):
        np.testing.assert_allclose(x.numpy(), g[f"net_input_s{j}"], rtol=0, atol=1e-6)
        with torch.no_grad():
            raw = model.class_maps(model.backbone(torch.stack([x, x.flip(-1)])), weight)
        fused = fuse_flip(raw).numpy()
        np.testing.assert_allclose(fused, g[f"fused_s{j}"], rtol=1e-4, atol=_atol(g[f"fused_s{j}"]))

    batch = collate_multiscale([{"id": "golden", "size": image.shape[:2], "label": g["label"], "images": inputs}])
    (seed,) = export_batch(model, weight, batch, torch.device("cpu"), amp=False)
    np.testing.assert_array_equal(np.flatnonzero(g["label"] > 0), g["keys"])
    for key in ("cam", "high_res"):
        np.testing.assert_allclose(seed[key].numpy(), g[key], rtol=1e-4, atol=_atol(g[key]))


def test_bucketed_export_equals_one_image_at_a_time() -> None:
    """Two equal-size images in one batched forward give the numbers of two single forwards."""
    torch.manual_seed(0)
    model = build_cam_net(arch="resnet18", num_classes=5, pretrained="none").eval()
    weight = model.classifier.weight.detach().flatten(1)
    rng = np.random.default_rng(0)
    samples = []
    for i in range(2):
        image = rng.integers(0, 255, (37, 45, 3), dtype=np.uint8)
        label = np.zeros(5, np.float32)
        label[[i, 3]] = 1
        samples.append(
            {
                "id": str(i),
                "size": (37, 45),
                "label": label,
                "images": multiscale_inputs(image, [1.0, 0.5, 1.5], MEAN, STD),
            }
        )
    together = export_batch(model, weight, collate_multiscale(samples), torch.device("cpu"), amp=False)
    for sample, seed in zip(samples, together):
        (alone,) = export_batch(model, weight, collate_multiscale([sample]), torch.device("cpu"), amp=False)
        for key in ("cam", "high_res"):
            torch.testing.assert_close(seed[key], alone[key], rtol=1e-5, atol=1e-6)

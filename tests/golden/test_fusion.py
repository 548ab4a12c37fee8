"""Golden vectors of the flip / multi-scale CAM fusion and the ReCAM inference weight."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from recam.cams.fusion import (
    CAM_STRIDE,
    combine_weights,
    fuse_flip,
    fuse_scales,
    keys_from_label,
    padded_up_size,
    strided_size,
)

# Golden README tolerances for multiscale_cam_fusion and recam_weight_combination floats.
RTOL, ATOL = 1e-5, 1e-6


def close(got: torch.Tensor, ref: np.ndarray) -> bool:
    return np.allclose(got.numpy(), ref, rtol=RTOL, atol=ATOL)


def raw_scales(z: dict) -> list[int]:
    """Indices j of the `raw_s{j}` arrays present, in order."""
    count = 0
    while f"raw_s{count}" in z:
        count += 1
    assert count > 0
    return list(range(count))


def test_multiscale_cam_fusion(golden):
    z = golden("multiscale_cam_fusion")
    fused = []
    for j in raw_scales(z):
        fused_j = fuse_flip(torch.from_numpy(z[f"raw_s{j}"]))
        assert close(fused_j, z[f"fused_s{j}"])
        fused.append(fused_j)

    keys = keys_from_label(torch.from_numpy(z["label"]))
    assert keys.dtype == torch.int64
    np.testing.assert_array_equal(keys.numpy(), z["keys"])

    height, width = (int(v) for v in z["image_size"])
    out = fuse_scales(fused, (height, width), keys)
    assert out["cam"].shape[1:] == strided_size(height, width, CAM_STRIDE)
    assert close(out["cam"], z["cam"])
    assert close(out["high_res"], z["high_res"])
    # Every normalised map tops out just below 1 (the +1e-5).
    assert torch.all(out["high_res"].amax(dim=(1, 2)) < 1)


def test_fusion_is_mirror_equivariant(golden):
    """Swapping the image and its mirror mirrors the fused map; checked on the golden inputs."""
    z = golden("multiscale_cam_fusion")
    for j in raw_scales(z):
        raw = torch.from_numpy(z[f"raw_s{j}"])
        swapped = torch.stack([raw[1], raw[0]])
        assert torch.allclose(fuse_flip(swapped), fuse_flip(raw).flip(-1), rtol=RTOL, atol=ATOL)


def test_high_res_is_resized_to_padded_size_then_cropped(golden):
    """Resizing straight to (H, W) would give other numbers: the golden file tells them apart."""
    z = golden("multiscale_cam_fusion")
    height, width = (int(v) for v in z["image_size"])
    assert padded_up_size(height, width) != (height, width)
    keys = torch.from_numpy(z["keys"])
    direct = sum(
        F.interpolate(
            fuse_flip(torch.from_numpy(z[f"raw_s{j}"]))[keys][None],
            size=(height, width),
            mode="bilinear",
            align_corners=False,
        )[0]
        for j in raw_scales(z)
    )
    direct = direct / (direct.amax(dim=(1, 2), keepdim=True) + 1e-5)
    assert not close(direct, z["high_res"])


def test_recam_weight_combination(golden):
    z = golden("recam_weight_combination")
    weight = combine_weights(torch.from_numpy(z["classifier_weight"]), torch.from_numpy(z["predictor_weight"]))
    assert close(weight, z["combined_weight"])
    raw = F.conv2d(torch.from_numpy(z["feature"]), weight[:, :, None, None])
    assert close(raw, z["raw"])
    assert close(fuse_flip(raw), z["fused"])

"""The CAM family by name: a plain dict (no registry), and one call that passes each method only
the options it takes.

    maps = compute_cams("scorecam", model, "layer4", images, [281], chunk_size=64, top_k=128)

Every method maps (model, target layer, images (B, 3, H, W), class ids (K,) or (B, K)) to
(B, K, h, w) float32 maps >= 0 at the target layer's resolution, not normalised.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from torch import Tensor, nn

from recam.cams.ablationcam import ablation_cam
from recam.cams.cam import cam
from recam.cams.gradcam import grad_cam, grad_cam_plusplus, layer_cam, smooth_grad_cam_plusplus, xgrad_cam
from recam.cams.hooks import OutputFn, logits_of
from recam.cams.scorecam import score_cam, ss_cam

CamMethod = Callable[..., Tensor]

CAM_METHODS: dict[str, CamMethod] = {
    "cam": cam,
    "gradcam": grad_cam,
    "gradcampp": grad_cam_plusplus,
    "smoothgradcampp": smooth_grad_cam_plusplus,
    "scorecam": score_cam,
    "sscam": ss_cam,
    "ablationcam": ablation_cam,
    "xgradcam": xgrad_cam,
    "layercam": layer_cam,
}

TITLES: dict[str, str] = {
    "cam": "CAM",
    "gradcam": "Grad-CAM",
    "gradcampp": "Grad-CAM++",
    "smoothgradcampp": "Smooth Grad-CAM++",
    "scorecam": "Score-CAM",
    "sscam": "SS-CAM",
    "ablationcam": "Ablation-CAM",
    "xgradcam": "XGrad-CAM",
    "layercam": "LayerCAM",
}


def method_options(method: str) -> tuple[str, ...]:
    """The keyword options `method` takes besides `output` (e.g. chunk_size, top_k, seed)."""
    parameters = inspect.signature(CAM_METHODS[method]).parameters
    return tuple(name for name, p in parameters.items() if p.kind is p.KEYWORD_ONLY and name != "output")


def compute_cams(
    method: str,
    model: nn.Module,
    target_layer: nn.Module | str,
    images: Tensor,
    class_ids: Tensor | Sequence[int] | Sequence[Sequence[int]],
    *,
    output: OutputFn = logits_of,
    **options: Any,
) -> Tensor:
    """Run CAM method `method` by name. Options it does not take, and options set to None, are left
    out (so one options dict from the config serves every method, None meaning its default)."""
    if method not in CAM_METHODS:
        raise ValueError(f"unknown CAM method {method!r}; choose one of {', '.join(CAM_METHODS)}")
    accepted = method_options(method)
    kwargs = {name: value for name, value in options.items() if name in accepted and value is not None}
    return CAM_METHODS[method](model, target_layer, images, class_ids, output=output, **kwargs)

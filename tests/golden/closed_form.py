"""The golden files' closed-form network parameters (golden README, "Closed-form network parameters").

Tensor i with m elements: s[k] = sin(0.37·k + 0.11·i), k = 0 … m−1, in float64, reshaped
row-major to the tensor's shape, then by kind of tensor:

* 4-D conv weight (O, I, kh, kw): (2 / sqrt(I·kh·kw)) · s
* `…running_var`: 1 + 0.5·|s|;  `…running_mean`: 0.1·s
* other `…weight` (BN / GN γ): g·(1 + 0.25·s), g = 0.5 if the name has `bn3` or `downsample.1`
* `…bias`: 0.1·s

rounded once to float32. The backbone's 265 tensors are torchvision's resnet50 state_dict keys
minus `fc.*` and `*.num_batches_tracked` (i = 0 … 264); the CAM classifier is i = 265 and the
IRN head tensors follow at 265 + j. Used by the ResNet-50 CAM test and, later, by the IRN tests.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn


def closed_form_tensor(index: int, name: str, shape: Sequence[int]) -> np.ndarray:
    """The float32 value of tensor `index` named `name` with `shape` under the rule above."""
    shape = tuple(int(d) for d in shape)
    k = np.arange(int(np.prod(shape)), dtype=np.float64)
    # Evaluated exactly in the README's form (0.37·k + 0.11·i), float64 throughout.
    s = np.sin(0.37 * k + 0.11 * index).reshape(shape)
    if len(shape) == 4:
        fan_in = shape[1] * shape[2] * shape[3]
        value = (2.0 / np.sqrt(fan_in)) * s
    elif name.endswith("running_var"):
        value = 1.0 + 0.5 * np.abs(s)
    elif name.endswith("running_mean"):
        value = 0.1 * s
    elif name.endswith("weight"):
        gain = 0.5 if ("bn3" in name or "downsample.1" in name) else 1.0
        value = gain * (1.0 + 0.25 * s)
    elif name.endswith("bias"):
        value = 0.1 * s
    else:
        raise ValueError(f"no closed-form rule for tensor {name!r}")
    return value.astype(np.float32)


def backbone_tensor_names(arch: str = "resnet50") -> list[str]:
    """torchvision's `arch` state_dict keys minus `fc.*` and `*.num_batches_tracked`, in order."""
    import torchvision.models as tvm

    with torch.device("meta"):  # names and order only: no memory, no init cost
        keys = list(getattr(tvm, arch)().state_dict())
    return [k for k in keys if not k.startswith("fc.") and not k.endswith("num_batches_tracked")]


def assign_closed_form(
    module: nn.Module,
    names: Sequence[str],
    *,
    start_index: int = 0,
    key_of: Callable[[str], str] = lambda name: name,
) -> None:
    """Set `module`'s tensors to the closed-form values, in place.

    names[j] gets index start_index + j and is stored at state_dict key `key_of(names[j])`
    (e.g. `"backbone." + name` for a CamNet). Every `*.num_batches_tracked` buffer is set to 0.
    Raises KeyError for a name the module lacks.
    """
    state = module.state_dict(keep_vars=True)
    with torch.no_grad():
        for offset, name in enumerate(names):
            target = state[key_of(name)]
            value = closed_form_tensor(start_index + offset, name, tuple(target.shape))
            target.copy_(torch.from_numpy(value))
        for key, tensor in state.items():
            if key.endswith("num_batches_tracked"):
                tensor.zero_()

"""GPU tests: `make test-gpu` (pytest -m gpu tests/gpu). Every test here is marked `gpu` and skips,
saying why, where no CUDA device is visible; the default `make test` deselects them."""

from __future__ import annotations

import pytest
import torch

NO_CUDA = not torch.cuda.is_available()
REASON = "no CUDA device visible (torch.cuda.is_available() is False); run `make test-gpu` on a GPU machine"


def pytest_collection_modifyitems(config, items) -> None:
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if NO_CUDA:
                item.add_marker(pytest.mark.skip(reason=REASON))


@pytest.fixture(scope="session")
def gpu_run(tmp_path_factory):
    """Overrides of a tiny synthetic experiment on CUDA (debug=tiny, then device cuda)."""
    base = tmp_path_factory.mktemp("gpu")
    return [
        f"run.root={base / 'outputs'}",
        f"dataset.root={base / 'data' / 'VOC2012'}",
        "dataset=synthetic",
        "debug=tiny",
        "runtime.device=cuda",
    ]

"""The SPG golden-vector folder (RECAM_GOLDEN_SPG_DIR, default ../shared/reference/golden-spg)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

DEFAULT_GOLDEN_SPG = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "golden-spg"


@pytest.fixture
def golden_spg():
    """`golden_spg("name")` -> dict of the arrays of `<RECAM_GOLDEN_SPG_DIR>/name.npz`.

    With RECAM_GOLDEN_SPG_DIR set, a missing file fails the test; without it, a missing default
    folder skips the test, saying why.
    """

    def load(name: str) -> dict[str, np.ndarray]:
        path = Path(os.environ.get("RECAM_GOLDEN_SPG_DIR", str(DEFAULT_GOLDEN_SPG))) / f"{name}.npz"
        if not path.is_file():
            if "RECAM_GOLDEN_SPG_DIR" in os.environ:
                pytest.fail(
                    f"golden file {path} is missing (RECAM_GOLDEN_SPG_DIR={os.environ['RECAM_GOLDEN_SPG_DIR']})"
                )
            pytest.skip(f"SPG golden vectors not found at {path}; set RECAM_GOLDEN_SPG_DIR to the golden-spg folder")
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    return load

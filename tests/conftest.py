from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest


def shared_dir() -> Path:
    env = os.environ.get("BLURBEAM_SHARED")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared"


@pytest.fixture(scope="session")
def shared() -> Path:
    d = shared_dir()
    if not (d / "data").is_dir():
        pytest.skip(f"shared research data not found at {d} (set BLURBEAM_SHARED)")
    return d / "data"


@pytest.fixture(scope="session")
def astronaut() -> np.ndarray:
    from blurbeam.demo import astronaut

    return astronaut()

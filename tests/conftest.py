"""Shared fixtures: the installed plugin registry and the data root."""

from __future__ import annotations

import os
from pathlib import Path

# The golden records (tests/golden) were written with torch's AVX2 CPU kernels; AVX-512 kernels round
# some sums differently, so bitwise comparisons need the same kernels on every machine. Set before
# torch is first imported; an explicit ATEN_CPU_CAPABILITY wins.
os.environ.setdefault("ATEN_CPU_CAPABILITY", "avx2")

import pytest  # noqa: E402
import torch  # noqa: E402

from lthbench.registry import default_registry

REPO = Path(__file__).resolve().parents[1]


def find_data_root() -> Path | None:
    """$LTHBENCH_DATA, else the shared data folder beside the repository, if either exists."""
    for candidate in (os.environ.get("LTHBENCH_DATA"), REPO.parent / "shared" / "data"):
        if candidate and (Path(candidate) / "MNIST" / "raw").is_dir():
            return Path(candidate)
    return None


@pytest.fixture(scope="session")
def registry():
    """Every installed plugin."""
    return default_registry()


@pytest.fixture
def one_thread():
    """One torch thread, as the subprocess tests use: the same numbers, and no fight over the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The folder holding MNIST and friends; tests that need real data skip without it."""
    root = find_data_root()
    if root is None:
        pytest.skip("no data root: set LTHBENCH_DATA to a folder holding MNIST/raw")
    return root

"""Shared fixtures.

Real-data tests read the datasets from FEDSIM_DATA_DIR (CI sets it to ../shared/data).
Outside CI a missing FEDSIM_DATA_DIR skips them with a message; under CI (CI=true) it fails
them, so a green CI always means the real-data tests ran.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# slow_guard: a test that starts Ray or a Flower/Ray launcher must be marked slow;
# pytester: tests/test_markers.py runs that guard on small test files.
pytest_plugins = ["tests.slow_guard", "pytester"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    raw = os.environ.get("FEDSIM_DATA_DIR")
    if not raw:
        message = "FEDSIM_DATA_DIR is not set; point it at ../shared/data to run real-data tests"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    path = Path(raw)
    if not path.is_dir():
        pytest.fail(f"FEDSIM_DATA_DIR={raw} is not a directory")
    return path


@pytest.fixture
def one_torch_thread():
    """One intra-op torch thread for the test (as in a Ray actor): on the shared 2-core machine
    the second thread mostly spins (an MF epoch took 10x the CPU time). Results are the same."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

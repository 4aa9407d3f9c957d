"""Shared fixtures. ``--device cuda`` runs the device-parametrised tests on a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("EQUINV_SHARED_DATA", REPO.parent / "shared" / "data"))


def pytest_addoption(parser):
    parser.addoption("--device", default="cpu", help="torch device for device-parametrised tests")


@pytest.fixture(scope="session")
def device(request) -> torch.device:
    d = torch.device(request.config.getoption("--device"))
    if d.type == "cuda" and not torch.cuda.is_available():
        pytest.skip("CUDA not available")
    return d


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data``; tests that need it are skipped (not failed) where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep the decoded-image cache of every test inside pytest's temp dir."""
    monkeypatch.setenv("EQUINV_CACHE", str(tmp_path_factory.getbasetemp() / "equinv_cache"))


#: Files whose long tests mostly wait (a hung rank's timeout, torchrun, subprocess pipelines): started first,
#: so that under pytest-xdist (one file per worker at a time) they overlap the computing files instead of
#: ending the run alone.
FIRST = ("tests/test_distributed.py", "tests/test_experiments.py", "tests/train/test_pretrain.py",
         "tests/evaluate/test_regression.py")


def pytest_collection_modifyitems(config, items):
    """Long, mostly waiting test files first (stable otherwise)."""
    def rank(item) -> int:
        path = item.nodeid.split("::")[0]
        return FIRST.index(path) if path in FIRST else len(FIRST)

    items.sort(key=rank)

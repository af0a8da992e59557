"""Shared fixtures and the opt-in switch for slow / GPU tests."""

from __future__ import annotations

import os

import pytest
import torch

# Tests are sized for 2 cores; more threads only add contention.
torch.set_num_threads(min(2, os.cpu_count() or 1))


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow or gpu")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        skip_gpu = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords and not torch.cuda.is_available():
                item.add_marker(skip_gpu)
        return
    skip = pytest.mark.skip(reason="opt-in: pass --runslow")
    for item in items:
        if "slow" in item.keywords or "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def plugin_manager():
    from negmine.plugins import get_plugin_manager

    return get_plugin_manager()

"""Shared fixtures and the opt-in switch for slow / GPU tests."""

from __future__ import annotations

import os
from pathlib import Path

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
def load_benchmark():
    """``load_benchmark("edit_shares")``: the module ``benchmarks/edit_shares.py`` (benchmarks are scripts, not a
    package), loaded fresh so a test's monkeypatching stays its own."""
    import importlib.util

    def load(name: str):
        path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
        spec = importlib.util.spec_from_file_location(f"{name}_bench", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    return load


@pytest.fixture
def plugin_manager():
    from negmine.plugins import get_plugin_manager

    return get_plugin_manager()


@pytest.fixture(scope="session")
def acg_rendered(tmp_path_factory):
    """A tiny Audio CLEVRGAN dataset of rendered scenes (40 pairs, 6 rendered edits), built once per test session.
    Tests may add caches to it but must copy it before changing anything else."""
    from audio_clevrgan import dataset as ds

    root = tmp_path_factory.mktemp("acg-rendered") / "data"
    ds.Builder(root, 40, 0, ds.RenderedSource(), workers=1, n_rendered=6).build()
    return root


@pytest.fixture(scope="session")
def acg_gan(tmp_path_factory):
    """A tiny Audio CLEVRGAN dataset from the committed GAN and segmenter (24 pairs), built once per test session."""
    from audio_clevrgan import dataset as ds

    checkpoints = Path(ds.__file__).parent / "checkpoints"
    root = tmp_path_factory.mktemp("acg-gan") / "data"
    ds.Builder(root, 24, 0, ds.GanSource(checkpoints / "generator.pt", checkpoints / "segmenter.pt"), workers=1,
               n_rendered=2).build()
    return root

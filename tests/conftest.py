"""Shared test setup: every test runs with the fast presets and its own token/checkpoint cache."""
import os

import pytest
import torch

os.environ.setdefault("GPT_LAB_FAST", "1")
os.environ.setdefault("GPT_LAB_PROGRESS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # `make test` runs two workers on two cores: one thread each, no oversubscription, and the same for what they
    # start (nbgrader's kernels, the grader, notebooks), which would otherwise spin two threads each on a busy core
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = "1"


@pytest.fixture(scope="session")
def shared_tmp(tmp_path_factory):
    """A folder of the whole test session: under pytest-xdist (`make test`), shared by every worker (the
    folder above their own temporary folders), so what is made there under a file lock is made once."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(shared_tmp):
    """A cache shared by the whole session (tokens and tiny checkpoints are made once, under a file lock)."""
    os.environ["GPT_LAB_CACHE"] = os.environ.get("GPT_LAB_TEST_CACHE") or str(shared_tmp / "gpt_lab_cache")
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads that
    wait for each other make each forward pass ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

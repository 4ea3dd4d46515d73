"""Shared test setup: every test runs with the fast presets and its own token/checkpoint cache."""
import os

import pytest
import torch

os.environ.setdefault("GPT_LAB_FAST", "1")
os.environ.setdefault("GPT_LAB_PROGRESS", "0")
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)  # `make test` runs two workers on two cores: one thread each, no oversubscription


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """A cache shared by the whole session (tokens and tiny checkpoints are made once, under a file lock,
    also when pytest-xdist's workers share it through the folder above their temporary folders)."""
    if "GPT_LAB_TEST_CACHE" in os.environ:
        os.environ["GPT_LAB_CACHE"] = os.environ["GPT_LAB_TEST_CACHE"]
    elif os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["GPT_LAB_CACHE"] = str(tmp_path_factory.getbasetemp().parent / "gpt_lab_cache")
    else:
        os.environ["GPT_LAB_CACHE"] = str(tmp_path_factory.mktemp("gpt_lab_cache"))
    yield


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine threads that
    wait for each other make each forward pass ~20x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)

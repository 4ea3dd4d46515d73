"""Shared test setup: every test runs with the fast presets and its own token/checkpoint cache."""
import os

import pytest

os.environ.setdefault("GPT_LAB_FAST", "1")
os.environ.setdefault("GPT_LAB_PROGRESS", "0")


@pytest.fixture(scope="session", autouse=True)
def _cache_dir(tmp_path_factory):
    """A cache shared by the whole session (tokens and tiny checkpoints are made once)."""
    if "GPT_LAB_TEST_CACHE" in os.environ:
        os.environ["GPT_LAB_CACHE"] = os.environ["GPT_LAB_TEST_CACHE"]
    else:
        os.environ["GPT_LAB_CACHE"] = str(tmp_path_factory.mktemp("gpt_lab_cache"))
    yield

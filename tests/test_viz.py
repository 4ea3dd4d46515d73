"""viz.claim: the check behind every number the book's prose states."""
import pytest

from gpt_lab import viz


def test_claim_fails_a_full_build_outside_its_range_and_is_off_under_fast(monkeypatch):
    monkeypatch.setenv("GPT_LAB_FAST", "0")
    viz.claim("a share", 0.5, 0.4, 0.6)
    with pytest.raises(AssertionError, match=r"the text says a share lies in \[0.4, 0.6\].*0.7"):
        viz.claim("a share", 0.7, 0.4, 0.6)
    monkeypatch.setenv("GPT_LAB_FAST", "1")
    viz.claim("a share", 0.7, 0.4, 0.6)  # the tiny model of CI: the prose does not apply

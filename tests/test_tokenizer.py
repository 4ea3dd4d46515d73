import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gpt_lab.tokenizer import EOT_ID, CompactTokenizer, get_tokenizer

LECTURE_CODE = "def add(a, b):\n    return a + b"
LECTURE_IDS = [4299, 751, 7, 64, 11, 275, 2599, 198, 220, 220, 220, 1441, 257, 1343, 275]


def test_lecture_ids():
    assert get_tokenizer().encode(LECTURE_CODE) == LECTURE_IDS


def test_vocab_and_special_token():
    enc = get_tokenizer()
    assert enc.n_vocab == 50257
    assert enc.eot_token == EOT_ID == 50256
    assert enc.encode("<|endoftext|>", allowed_special="all") == [50256]


def test_no_network(monkeypatch):
    """Building the encoding must not open a socket (the file ships in the package)."""
    import socket

    def refuse(*args, **kwargs):
        raise AssertionError("tokenizer tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    get_tokenizer.cache_clear()
    assert get_tokenizer().encode("hello world") == [31373, 995]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_roundtrip_any_unicode(text):
    enc = get_tokenizer()
    assert enc.decode(enc.encode(text, disallowed_special=())) == text


@pytest.fixture(scope="module")
def small_compact():
    return CompactTokenizer(get_tokenizer().encode("def add(a, b): return a + b"))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text())
def test_compact_tokenizer_roundtrip_any_unicode(small_compact, text):
    """Tokens outside the kept set are spelled with byte tokens; decoding stays exact."""
    compact = small_compact
    ids = compact.encode(text)  # special tokens allowed: "<|endoftext|>" round-trips too
    assert all(0 <= i < compact.n_vocab for i in ids)
    assert compact.decode(ids) == text


def test_compact_tokenizer_array_remap_matches_the_list_remap(small_compact):
    import numpy as np

    ids = get_tokenizer().encode("déjà vu: def add(a, b) 😀 <|endoftext|>", allowed_special="all")
    dense = small_compact.from_gpt2_array(np.array(ids))
    assert dense.tolist() == small_compact.from_gpt2(ids)
    assert small_compact.decode(dense.tolist()) == "déjà vu: def add(a, b) 😀 <|endoftext|>"
    assert len(dense) > len(ids)  # unknown tokens became several byte tokens


def test_compact_tokenizer_maps_kept_ids_densely():
    compact = CompactTokenizer(LECTURE_IDS)
    assert compact.n_vocab == 256 + len(set(LECTURE_IDS) - set(range(256))) + 1
    dense = compact.encode(LECTURE_CODE)
    assert compact.to_gpt2(dense) == LECTURE_IDS  # every lecture token is kept: same tokens, new ids
    assert compact.decode([compact.eot_token]) == "<|endoftext|>"


def test_compact_tokenizer_rejects_out_of_range_ids():
    with pytest.raises(ValueError, match="kept ids"):
        CompactTokenizer([60000])

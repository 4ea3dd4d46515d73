"""Numbers and claims that chapters 1, 2, 3 and 6 state in their prose, recomputed from gpt_lab.

Each test computes the quoted number (GPT-2's tokenizer, random models, formulas; never the course
model, whose numbers the chapters glue from their own cells) and checks that the chapter states it,
so a change in the code or the text that breaks a claim fails here.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gpt_lab.attention import MultiHeadAttention
from gpt_lab.model import GPTConfig
from gpt_lab.tokenizer import get_tokenizer

BOOK = Path(__file__).resolve().parents[1] / "book"


def chapter(name: str) -> str:
    return (BOOK / name).read_text(encoding="utf-8")


def quoted(text: str, number: int) -> bool:
    """The number as a chapter writes it: 39,383,808 in prose, 39{,}383{,}808 in math."""
    return f"{number:,}" in text or f"{number:,}".replace(",", "{,}") in text


# ---------------------------------------------------------------- chapter 1: tokens

@pytest.fixture(scope="module")
def enc():
    return get_tokenizer()


def test_emoji_is_four_bytes_and_three_tokens(enc):
    text = chapter("01_tokens.md")
    ids = enc.encode(" 🦄")
    pieces = [enc.decode_single_token_bytes(i) for i in ids]
    assert len("🦄".encode("utf-8")) == 4 and len(ids) == 3
    assert pieces[0] == b" \xf0\x9f" and all(len(p) == 1 for p in pieces[1:])
    assert "four\nUTF-8 bytes" in text or "four UTF-8 bytes" in text
    assert "None of the three tokens" in text
    assert "`f0 9f`" in text and "`20 f0 9f`" in text
    assert "its four UTF-8 bytes." not in text     # the old, wrong claim


def test_singular_and_plural_ids(enc):
    text = chapter("01_tokens.md")
    assert enc.encode(" transformer") == [47385]
    assert enc.encode(" transformers") == [6121, 364]
    for i in (47385, 6121, 364):
        assert str(i) in text


def test_typos_are_spelled_with_subwords(enc):
    pieces = [enc.decode_single_token_bytes(i) for i in enc.encode("Henry is givin' a lectrue on transformers")]
    assert b" lect" in pieces and b"rue" in pieces and b" transform" in pieces and b"ers" in pieces
    assert "(`lect` + `rue`)" in chapter("01_tokens.md")


def test_logographic_text_costs_more_tokens_per_character(enc):
    english, japanese = "The capital of Japan is Tokyo.", "日本の首都は東京です。"
    assert len(enc.encode(japanese)) / len(japanese) > 1 > len(enc.encode(english)) / len(english)
    assert len(enc.encode(japanese)) > len(enc.encode(english))
    assert all(len(c.encode("utf-8")) == 3 for c in "日本首都東京")    # "three UTF-8 bytes"
    assert "each character is three UTF-8 bytes" in chapter("01_tokens.md")


def test_indentation_exercise(enc):
    for n in (4, 8, 12):
        assert len(enc.encode(" " * n + "return")) == n


def test_embedding_exercise_numbers():
    text = chapter("01_tokens.md")
    cfg = GPTConfig()
    wte, wpe = cfg.vocab_size * cfg.n_embd, cfg.block_size * cfg.n_embd
    assert (wte, wpe, wte + wpe) == (38_597_376, 786_432, 39_383_808)
    assert all(quoted(text, n) for n in (38_597_376, 786_432, 39_383_808))
    assert round(100 * (wte + wpe) / 124_439_808) == 32 and "about 32%" in text


def test_attention_without_positions_is_permutation_equivariant():
    """Chapter 1, exercise 5."""
    torch.manual_seed(0)
    mha = MultiHeadAttention(64, 4)
    x, perm = torch.randn(15, 64), torch.randperm(15)
    with torch.no_grad():
        out, _ = mha(x[None])
        out_perm, _ = mha(x[perm][None])
    torch.testing.assert_close(out_perm[0], out[0][perm])

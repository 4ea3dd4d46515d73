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


# ---------------------------------------------------------------- chapter 2: attention

def test_variance_ratio_is_d_by_construction():
    """Dividing by sqrt(d) divides the variance by d, whatever the scores: the ratio is no result."""
    text = chapter("02_attention.md")
    torch.manual_seed(1)
    for scores in (torch.randn(15, 15) * 17 + 300, torch.rand(15, 15)):
        assert (scores.var() / (scores / math.sqrt(768)).var()).item() == pytest.approx(768, rel=1e-5)
    assert round(8936.9609375 / 11.63666820526123, 1) == 768.0        # the lecture's two variances
    assert "is 768.0 too" in text and "by construction" in text
    assert "{glue:text}`ratio:.0f` $= d$" not in text                 # the old claim


def test_scaled_score_variance_is_product_of_variances():
    """Var(q.k / sqrt(d_k)) = var_q var_k: one only for unit variance (chapter 2 and exercise 2)."""
    text = chapter("02_attention.md")
    torch.manual_seed(0)
    q, k = torch.randn(4096, 768), torch.randn(4096, 768)
    assert ((q * k).sum(-1) / math.sqrt(768)).var().item() == pytest.approx(1.0, abs=0.1)
    q2, k2 = torch.randn(100_000, 64) * math.sqrt(2), torch.randn(100_000, 64) * math.sqrt(2)
    dots = (q2 * k2).sum(-1)
    assert dots.var().item() == pytest.approx(256, rel=0.05)
    assert (dots / 8).var().item() == pytest.approx(4, rel=0.05)
    assert "64 \\times 2 \\times 2 = 256" in text and "= 4$ after" in text


def test_head_count_does_not_change_attention_parameters():
    text = chapter("02_attention.md")
    for n_head in (1, 12, 768):
        mha = MultiHeadAttention(768, n_head)
        assert mha.c_attn.weight.numel() + mha.c_attn.bias.numel() == 1_771_776
        assert mha.c_proj.weight.numel() + mha.c_proj.bias.numel() == 590_592
    assert quoted(text, 1_771_776) and quoted(text, 590_592)


def test_quadratic_attention_term_dominates_above_2d():
    text = chapter("02_attention.md")
    d = 768
    share = lambda T: 2 * T**2 * d / (4 * T * d**2 + 2 * T**2 * d)
    assert share(1024) < 0.5 < share(1537) and share(1536) == pytest.approx(0.5)
    assert "$T$ = 1,537" in text and "exceeds $2d$" in text


# ---------------------------------------------------------------- chapter 3: masking

def test_allowed_pairs_of_a_right_padded_sequence():
    """Exercise 2: n(n + 1)/2 + (L - n) n allowed pairs; 30 for n = 5, L = 8."""
    from gpt_lab.attention import combined_mask

    text = chapter("03_masking.md")
    for n in range(1, 9):
        attention_mask = torch.tensor([[1] * n + [0] * (8 - n)])
        allowed = int((~combined_mask(attention_mask, 8)).sum())
        assert allowed == n * (n + 1) // 2 + (8 - n) * n
    assert "$15 + 15 = 30$" in text


def test_multiplying_by_infinity_gives_nan():
    """Exercise 4: (causal + padding) * -inf breaks every allowed entry."""
    from gpt_lab.attention import causal_mask

    mask = causal_mask(4).float() * float("-inf")
    assert torch.isnan(torch.softmax(torch.zeros(4, 4) + mask, -1)).all()


def test_masked_lm_signal_count():
    text = chapter("03_masking.md")
    assert round(0.15 * 1000) == 150 and 1000 - 1 == 999
    assert "About 150" in text and "999" in text and "more than six times" in text
    assert 999 / 150 > 6


# ---------------------------------------------------------------- chapter 6: KV cache

def naive_total(T, N, d, V):
    return sum(12 * N * d**2 * t + 2 * N * d * t**2 + V * d * t for t in range(1, T + 1))


def cached_total(T, N, d, V):
    return sum(12 * N * d**2 + 2 * N * d * t + V * d for t in range(1, T + 1))


def test_generation_cost_is_cubic_without_and_quadratic_with_the_cache():
    text = chapter("06_kv_cache.md")
    N, d, V = 12, 768, 50257
    # the attention terms: x8 and x4 when T doubles (exercise 3), at large T
    attn_naive = lambda T: sum(2 * N * d * t**2 for t in range(1, T + 1))
    attn_cached = lambda T: sum(2 * N * d * t for t in range(1, T + 1))
    assert attn_naive(4096) / attn_naive(2048) == pytest.approx(8, rel=1e-3)
    assert attn_cached(4096) / attn_cached(2048) == pytest.approx(4, rel=1e-3)
    # the closed forms of the chapter are the leading terms of the sums
    T = 1024
    approx_naive = 6 * N * d**2 * T**2 + 2 / 3 * N * d * T**3 + 0.5 * V * d * T**2
    approx_cached = 12 * N * d**2 * T + N * d * T**2 + V * d * T
    assert naive_total(T, N, d, V) == pytest.approx(approx_naive, rel=0.01)
    assert cached_total(T, N, d, V) == pytest.approx(approx_cached, rel=0.01)
    assert "O(T^3)" in text and "O(T^2)" in text
    assert "the time per token no longer grows with the position" not in text   # the old claim


def test_attention_over_the_cache_stays_small_within_gpt2_context():
    text = chapter("06_kv_cache.md")
    N, d, V = 12, 768, 50257
    assert 6 * d == 4608 and quoted(text, 4608)
    share = 2 * N * d * 1024 / (12 * N * d**2 + 2 * N * d * 1024 + V * d)
    assert share < 0.2


def test_cache_memory_exercise():
    text = chapter("06_kv_cache.md")
    nbytes = 2 * 12 * 8 * 1024 * 768 * 2
    assert nbytes == 301_989_888 and nbytes / 2**20 == 288
    assert quoted(text, 301_989_888) and "288 MiB" in text
    assert round(124_439_808 * 2 / 2**20) == 237 and "237 MiB" in text

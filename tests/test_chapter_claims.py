"""Numbers and claims that chapters 1, 2, 3, 5 and 6 state in their prose, recomputed from gpt_lab.

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


# ---------------------------------------------------------------- chapters 5: search and sampling

def test_search_space_is_printed_not_compared_wrongly():
    """|V|^n for the course vocabulary and 20 tokens is about 10^77: fewer than 10^80, so the old
    'far more than the atoms' is gone and the prose glues what the cell prints."""
    from gpt_lab.presets import course_tokenizer

    text = chapter("05_decoding.md")
    exponent = 20 * math.log10(course_tokenizer().n_vocab)
    assert round(exponent) == 77 and 75 < exponent < 80        # "not far below the roughly 10^80 atoms"
    assert "not far below the roughly $10^{80}$ atoms" in text
    assert "far more than the roughly" not in text
    assert "{glue:md}`search_count`" in text and "{glue:text}`search_exponent`" in text
    assert 'print(f"|V|^n = {n_vocab}^{n} = 10^{exponent:.0f} sequences")' in text
    years = exponent - 9 - math.log10(3600 * 24 * 365)
    assert years > 10          # "the universe is about 10^10 years old": the search takes longer


def test_search_exercise_work_count():
    """Exercise 3: 20 steps x 4 beams x about 7,000 tokens is about 6 * 10^5 scores."""
    from gpt_lab.presets import course_tokenizer

    n_vocab = course_tokenizer().n_vocab
    assert 6500 < n_vocab < 7500                                # "about 7,000"
    assert round(20 * 4 * n_vocab, -5) == 600_000                # "about 6 * 10^5"
    assert "20 \\times 4 \\times 7{,}000 \\approx 6 \\cdot 10^5" in chapter("05_decoding.md")


def test_toy_beam_numbers():
    """The toy: greedy 0.18, best 0.216 (city of light), capital <end> 0.12, length-normalised scores."""
    text = chapter("05_decoding.md")
    assert math.isclose(0.6 * 0.5 * 0.6, 0.18) and math.isclose(0.3 * 0.9 * 0.8, 0.216)
    assert "$0.3 \\times 0.9 \\times 0.8 = 0.216$" in text
    assert f"{0.6 * 0.7 * 0.6:.3f}" == "0.252" and "0.252" in text          # exercise 1
    assert f"{math.log(0.12):.2f}" == "-2.12" and f"{math.log(0.216):.2f}" == "-1.53"
    assert f"{math.log(0.12) / 2:.2f}" == "-1.06" and f"{math.log(0.216) / 4:.2f}" == "-0.38"
    for quoted_number in ("-2.12", "-1.53", "-1.06", "-0.38"):
        assert quoted_number in text


def test_penalty_example_and_the_lectures_0320():
    """Exact 0.3213 (0.321); the lecture's rounded logits give 0.3207 (still 0.321), so rounding does
    not explain its 0.320; its four values add up to 0.999; 0.305 is 0.3056 cut."""
    from gpt_lab.decoding import apply_penalties

    text = chapter("05_sampling.md")
    z = torch.tensor([0.8, 0.9, 0.1, 0.4])
    history = [0, 1, 0, 2, 0, 0]
    penalised = apply_penalties(z, history, frequency_penalty=1.1, presence_penalty=1.2)
    rho = z / penalised
    assert torch.allclose(rho, torch.tensor([1.6, 1.3, 1.3, 1.0]))
    exact = penalised.softmax(-1)
    rounded = torch.round(z / rho, decimals=2)
    assert rounded.tolist() == pytest.approx([0.5, 0.69, 0.08, 0.4])
    from_rounded = rounded.softmax(-1)
    assert f"{exact[1]:.4f}" == "0.3213" and f"{from_rounded[1]:.4f}" == "0.3207"
    assert f"{from_rounded[1]:.3f}" == "0.321"                   # rounding gives 0.321, not 0.320
    assert [f"{p:.4f}" for p in exact] == ["0.2651", "0.3213", "0.1737", "0.2399"]
    assert [f"{p:.4f}" for p in from_rounded] == ["0.2652", "0.3207", "0.1742", "0.2399"]
    assert f"{sum([0.265, 0.320, 0.174, 0.240]):.3f}" == "0.999"
    assert f"{z.softmax(-1)[0]:.4f}" == "0.3056"                 # the lecture's 0.305: cut, not rounded
    assert math.floor(float(from_rounded[3]) * 1000) / 1000 == 0.239  # "the same cut turns 0.2399 into 0.239"
    for number in ("0.3207", "0.2399", "0.239", "[0.265, 0.321, 0.174, 0.240]",
                   "[0.2651, 0.3213, 0.1737, 0.2399]", "[0.2652, 0.3207, 0.1742, 0.2399]", "0.999"):
        assert number in text, number
    assert "because it rounds the divided logits" not in text      # the old, wrong explanation
    for name in ("pen_exact_b", "pen_rounded_b", "pen_exact_a0", "pen_lecture_sum"):
        assert f"{{glue:text}}`{name}" in text


def test_sampling_exercise_numbers():
    text = chapter("05_sampling.md")
    z = torch.tensor([2.0, 1.0, 0.0])
    for tau, expected in ((0.5, "[0.867, 0.117, 0.016]"), (1.0, "[0.665, 0.245, 0.090]"),
                          (2.0, "[0.506, 0.307, 0.186]")):
        q = (z / tau).softmax(-1)
        assert "[" + ", ".join(f"{v:.3f}" for v in q) + "]" == expected and expected.replace(
            "[", "$[").replace("]", "]$") in text
    tail = 39 * 0.1 / 999
    assert f"{tail:.4f}" == "0.0039" and f"{tail / (0.9 + tail):.1%}" == "0.4%"
    assert "$0.0039$" in text and "about $0.4\\%$" in text


def test_notation_in_the_decoding_chapters():
    """Temperature is tau, the vocabulary |V|, the beam width b, the penalty divisor rho (notation table)."""
    for name in ("05_decoding.md", "05_sampling.md"):
        text = chapter(name)
        assert "V^L" not in text and "$T = " not in text and "$T <" not in text and "$T >" not in text
        assert "k_i" not in text and "$k = 2$" not in text
    assert "\\tau" in chapter("05_sampling.md") and "\\rho_i" in chapter("05_sampling.md")
    assert "$b = 2$" in chapter("05_decoding.md")


# ---------------------------------------------------------------- chapters 4, 7, 8: exercises and prose

def test_teacher_forcing_numbers():
    text = chapter("04_teacher_forcing.md")
    assert 512 * 1024 == 524_288
    assert "524,288 tokens a\nbatch" in text or "524,288 tokens a batch" in text
    assert 8 * 127 == 1016 and "8 \\times 127 = 1{,}016" in text
    loss = (math.log(2) + math.log(4) + math.log(2) + math.log(8)) / 4
    assert f"{loss:.3f}" == "1.213" and f"{math.exp(loss):.2f}" == "3.36" and math.isclose(math.exp(loss), 2 ** 1.75)
    assert "1.213" in text and "3.36" in text
    assert "$4 + 2 = 6$" in text
    # the experiment's prose glues its numbers and the claim cell guards the comparison
    for name in ("gd_final", "mb_final", "sgd_final", "gd_vocab", "gd_budget"):
        assert f"{{glue:text}}`{name}" in text


def test_prompting_exercise_numbers():
    from gpt_lab.prompting import binomial_interval

    text = chapter("07_prompting.md")
    assert (256 - 16) // 6 == 40 and (1024 - 16) // 6 == 168 and 256 - 16 - 4 * 40 == 80
    assert "40 tokens for\n   $L = 256$ and 168 tokens" in text and "80 tokens for $L = 256$" in text
    low, high = binomial_interval(0, 40)
    assert low == 0.0 and f"{high:.1%}" == "8.8%" and "about 0% to 8.8%" in text
    assert round(99 * 1.96 ** 2) == 380 and binomial_interval(0, 381)[1] < 0.01 <= binomial_interval(0, 379)[1]


def test_sft_exercise_numbers():
    assert 40 + 6 - 1 == 45 and "$40 + 6 - 1 = 45$" in chapter("08_sft.md")

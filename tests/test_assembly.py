"""The numbers the chapter "Assembling GPT" (book/04_assembling_gpt.md) quotes in its prose.

Each test computes one quoted number from `gpt_lab` (random weights, nothing downloaded or trained)
and checks that the chapter's text states that number, so the prose cannot drift from the code.
The parameter count is also checked against HuggingFace transformers' own GPT-2.
"""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from gpt_lab.model import GPT, GPTConfig
from gpt_lab.tokenizer import get_tokenizer

CHAPTER = Path(__file__).resolve().parents[1] / "book" / "04_assembling_gpt.md"
GPT2_SMALL = 124_439_808
FRAGMENT = "def add(a, b):\n    return a + b"


@pytest.fixture(scope="module")
def text() -> str:
    return CHAPTER.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig()).eval()


def params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def quoted(text: str, number: int | str) -> bool:
    """The number as the chapter writes it: 124,439,808 in prose, 124{,}439{,}808 in math."""
    written = f"{number:,}" if isinstance(number, int) else number
    return written in text or written.replace(",", "{,}") in text


def test_gpt2_small_parameter_count_matches_transformers(model):
    transformers = pytest.importorskip("transformers")
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config())   # random weights, no download
    assert params(hf) == params(model) == GPT2_SMALL


def test_total_parameter_count_is_quoted(model, text):
    assert params(model) == GPT2_SMALL
    assert quoted(text, GPT2_SMALL)


def test_parameter_formula(model):
    cfg = model.config
    V, L, N, d = cfg.vocab_size, cfg.block_size, cfg.n_layer, cfg.n_embd
    assert params(model) == V * d + L * d + N * (12 * d**2 + 13 * d) + 2 * d


def test_block_count_is_quoted(model, text):
    block = model.transformer.h[0]
    assert params(block) == 7_087_872
    assert quoted(text, params(block))
    assert quoted(text, 7_077_888) and quoted(text, 9_984)      # 12 d^2 and 13 d in the exercise


def test_mlp_and_attention_counts_are_quoted(model, text):
    block = model.transformer.h[0]
    assert params(block.mlp) == 4_722_432 and quoted(text, 4_722_432)
    assert params(block.mlp.c_fc) == params(block.attn) == 2_362_368      # exercise 1
    assert quoted(text, 2_362_368)
    assert params(block.attn.c_attn) == 1_771_776 and quoted(text, 1_771_776)
    assert params(block.mlp.c_proj) == 2_360_064 and quoted(text, 2_360_064)
    assert params(block.mlp) / params(block) == pytest.approx(2 / 3, abs=0.01)   # "two thirds"
    assert "two thirds of a block" in text


def test_layernorm_and_widths_are_quoted(model, text):
    block = model.transformer.h[0]
    d = model.config.n_embd
    assert params(block.ln_1) == 2 * d == 1_536 and quoted(text, 1_536)
    assert block.mlp.c_fc.out_features == 4 * d == 3_072 and quoted(text, 3_072)
    assert block.attn.c_attn.out_features == 3 * d == 2304 and "2304" in text
    assert d // model.config.n_head == 64 and "$d_k = 64$" in text


def test_embedding_counts_are_quoted(model, text):
    wte = model.transformer.wte.weight.numel()
    assert wte == 38_597_376 and quoted(text, wte)
    assert GPT2_SMALL + wte == 163_037_184 and quoted(text, 163_037_184)   # untied head
    assert model.lm_head.weight is model.transformer.wte.weight


def test_lm_head_share_is_quoted(model, text):
    """Exercise 4: the LM head is about 31% of the matrix work per token."""
    head = model.transformer.wte.weight.numel()
    blocks = sum(params(b) for b in model.transformer.h)
    assert blocks == 85_054_464 and quoted(text, blocks)
    assert round(100 * head / (head + blocks)) == 31 and "about 31%" in text


def test_forward_shapes_on_the_lecture_fragment(model, text):
    """15 tokens: the stream is 15 x 768, each head 15 x 64, logits 15 x 50,257."""
    idx = torch.tensor([get_tokenizer().encode(FRAGMENT)])
    assert idx.shape == (1, 15)
    with torch.no_grad():
        logits, _ = model(idx)
        maps = model.attention_maps(idx)
    assert logits.shape == (1, 15, 50257) and quoted(text, 50_257)
    assert maps[0].shape == (1, 12, 15, 15)
    assert len(maps) == 12
    for phrase in ("$15 \\times 768$", "$15 \\times 64$", "$15 \\times 15$", "768 to 50,257"):
        assert phrase in text, phrase


def test_gpt2_sizes_are_counted_on_meta(text):
    """GPT-2 XL (48 layers, d = 1600) is the "1.5-billion-parameter" model of the prose."""
    with torch.device("meta"):
        xl = GPT(GPTConfig(n_layer=48, n_head=25, n_embd=1600))
    assert params(xl) == 1_557_611_200
    assert "1.5-billion-parameter" in text and "GPT-2 XL 48" in text


def test_random_init_loss_reference(text):
    """ln |V| = 10.82 nats is the loss of uniform guessing the chapter compares with."""
    assert f"{math.log(50257):.2f}" == "10.82"
    assert "\\ln |\\mathcal V|" in text

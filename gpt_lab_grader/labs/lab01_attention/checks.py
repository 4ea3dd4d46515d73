"""Hidden checks of lab 1 (attention), against gpt_lab's references on seeded random inputs.

Run by `gpt_lab_grader.checks.run_checks("lab01-attention", notebook)`; the student's code is
reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py).
"""
import pytest
import torch

from gpt_lab_grader.labs.adapters import assert_tensor, expect_tuple, namespace
from gpt_lab.attention import MultiHeadAttention, causal_mask, scaled_dot_product_attention
from gpt_lab_grader.labs.lab01_attention import scenarios

LAB = "lab01-attention"


def rand(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def reference_mha(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head, mask=None):
    """gpt_lab's MultiHeadAttention with the given weights, weights requested."""
    C = x.shape[-1]
    module = MultiHeadAttention(C, n_head, bias=c_attn_bias is not None).to(x.dtype).eval()
    with torch.no_grad():
        module.c_attn.weight.copy_(c_attn_weight)
        module.c_proj.weight.copy_(c_proj_weight)
        if c_attn_bias is not None:
            module.c_attn.bias.copy_(c_attn_bias)
            module.c_proj.bias.copy_(c_proj_bias)
        return module(x, mask, need_weights=True)


REFERENCE = namespace(scaled_dot_product_attention=scaled_dot_product_attention, multi_head_attention=reference_mha)


def check_sdpa(student, q, k, v, mask=None, atol=None, rtol=None):
    out, weights = expect_tuple(student.scaled_dot_product_attention(q, k, v, mask), 2,
                                "scaled_dot_product_attention")
    want_out, want_weights = scaled_dot_product_attention(q, k, v, mask)
    assert_tensor(weights, want_weights, "the attention weights", atol=atol, rtol=rtol)
    assert_tensor(out, want_out, "the attention output", atol=atol, rtol=rtol)


# --- scaled dot-product attention


@pytest.mark.points(1)
@pytest.mark.parametrize("q_shape, T_k, d_v", [((4, 8), 4, 8), ((2, 5, 16), 9, 3), ((3, 2, 6, 8), 6, 8)],
                         ids=["2d", "3d-cross", "4d-heads"])
def test_sdpa_without_mask(student, q_shape, T_k, d_v):
    """scaled_dot_product_attention matches softmax(q k^T / sqrt(d_k)) v (any leading axes, T_q != T_k, d_v != d_k)"""
    *lead, T_q, d_k = q_shape
    check_sdpa(student, rand(*q_shape, seed=1), rand(*lead, T_k, d_k, seed=2), rand(*lead, T_k, d_v, seed=3))


@pytest.mark.points(1)
@pytest.mark.parametrize("B, H, T", [(2, 3, 7), (1, 1, 12)])
def test_sdpa_causal(student, B, H, T):
    """scaled_dot_product_attention with a causal mask (T, T) broadcast over batch and heads"""
    q, k, v = (rand(B, H, T, 8, seed=s) for s in (4, 5, 6))
    check_sdpa(student, q, k, v, causal_mask(T))


@pytest.mark.points(1)
def test_sdpa_padding_mask_broadcast(student):
    """scaled_dot_product_attention with a padding mask of shape (B, 1, 1, T_k)"""
    q, k, v = (rand(3, 2, 5, 4, seed=s) for s in (7, 8, 9))
    mask = torch.tensor([[0, 0, 0, 0, 0], [1, 1, 0, 0, 0], [0, 0, 0, 1, 1]], dtype=torch.bool)[:, None, None, :]
    check_sdpa(student, q, k, v, mask)


@pytest.mark.points(2)
def test_sdpa_fully_masked_rows(student):
    """a query whose keys are all masked gets zero weights and a zero output (no NaN)"""
    q, k, v = (rand(2, 6, 8, seed=s) for s in (10, 11, 12))
    mask = torch.rand(2, 6, 6, generator=torch.Generator().manual_seed(13)) < 0.4
    mask[0, 1] = True
    mask[1, 4] = True
    mask[1, 0] = True
    check_sdpa(student, q, k, v, mask)


@pytest.mark.points(1)
def test_sdpa_single_position(student):
    """scaled_dot_product_attention on length-1 sequences (T_q = T_k = 1)"""
    q, k, v = (rand(3, 1, 5, seed=s) for s in (14, 15, 16))
    check_sdpa(student, q, k, v, causal_mask(1))


@pytest.mark.points(1)
def test_sdpa_keeps_dtype(student):
    """scaled_dot_product_attention keeps the dtype of its inputs (float64 in, float64 out)"""
    q, k, v = (rand(2, 4, 8, seed=s, dtype=torch.float64) for s in (17, 18, 19))
    check_sdpa(student, q, k, v, causal_mask(4), atol=1e-10, rtol=1e-10)


@pytest.mark.points(2)
def test_sdpa_inside_gpt(student):
    """a GPT using your scaled_dot_product_attention gives the same logits, with and without left padding"""
    idx = torch.randint(61, (3, 10), generator=torch.Generator().manual_seed(20))
    attention_mask = torch.ones(3, 10, dtype=torch.long)
    attention_mask[1, :3] = 0
    attention_mask[2, :9] = 0
    for mask in (None, attention_mask):
        got = student.scenario("gpt_logits_with_attention", idx=idx, attention_mask=mask, seed=3)
        want = scenarios.gpt_logits_with_attention(REFERENCE, idx=idx, attention_mask=mask, seed=3)
        assert_tensor(got, want, "the GPT's logits", atol=1e-5, rtol=1e-5)


# --- heads


@pytest.mark.points(1)
@pytest.mark.parametrize("B, T, C, n_head", [(2, 5, 12, 3), (1, 1, 8, 8), (3, 4, 16, 1)])
def test_split_heads(student, B, T, C, n_head):
    """split_heads turns (B, T, C) into (B, n_head, T, C // n_head), head h holding its own slice of channels"""
    x = rand(B, T, C, seed=21)
    want = MultiHeadAttention(C, n_head).split_heads(x)
    assert_tensor(student.split_heads(x, n_head), want, f"split_heads(x {tuple(x.shape)}, {n_head})", exact=True)


@pytest.mark.points(1)
@pytest.mark.parametrize("B, H, T, hd", [(2, 3, 5, 4), (1, 8, 1, 1)])
def test_merge_heads(student, B, H, T, hd):
    """merge_heads turns (B, n_head, T, head_dim) back into (B, T, n_head * head_dim)"""
    x = rand(B, H, T, hd, seed=22)
    want = x.transpose(1, 2).reshape(B, T, H * hd)
    assert_tensor(student.merge_heads(x), want, f"merge_heads(x {tuple(x.shape)})", exact=True)


# --- multi-head attention


def mha_weights(C, bias=True, seed=0, dtype=torch.float32):
    w = [rand(3 * C, C, seed=seed, dtype=dtype) * 0.2, rand(3 * C, seed=seed + 1, dtype=dtype) * 0.1,
         rand(C, C, seed=seed + 2, dtype=dtype) * 0.2, rand(C, seed=seed + 3, dtype=dtype) * 0.1]
    return w if bias else [w[0], None, w[2], None]


def check_mha(student, x, weights, n_head, mask=None, atol=1e-5, rtol=1e-5):
    y, w = expect_tuple(student.multi_head_attention(x, *weights, n_head, mask), 2, "multi_head_attention")
    want_y, want_w = reference_mha(x, *weights, n_head, mask)
    assert_tensor(w, want_w, "the per-head attention weights", atol=atol, rtol=rtol)
    assert_tensor(y, want_y, "the output y", atol=atol, rtol=rtol)


@pytest.mark.points(1)
@pytest.mark.parametrize("B, T, C, n_head", [(2, 6, 16, 4), (1, 9, 12, 1), (3, 1, 8, 2)])
def test_mha_causal(student, B, T, C, n_head):
    """multi_head_attention with a causal mask matches GPT-2's attention layer"""
    check_mha(student, rand(B, T, C, seed=23), mha_weights(C, seed=24), n_head, causal_mask(T))


@pytest.mark.points(1)
def test_mha_without_mask_or_bias(student):
    """multi_head_attention without a mask and without biases (c_attn_bias = c_proj_bias = None)"""
    check_mha(student, rand(2, 5, 12, seed=25), mha_weights(12, bias=False, seed=26), 3)


@pytest.mark.points(1)
def test_mha_padding_and_float64(student):
    """multi_head_attention with a (B, 1, T, T) causal+padding mask (fully masked rows) in float64"""
    T = 5
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]])
    mask = causal_mask(T) | (attention_mask == 0)[:, None, None, :]
    x = rand(2, T, 8, seed=27, dtype=torch.float64)
    check_mha(student, x, mha_weights(8, seed=28, dtype=torch.float64), 2, mask, atol=1e-10, rtol=1e-10)


@pytest.mark.points(2)
def test_mha_inside_gpt(student):
    """a GPT whose attention layers run your multi_head_attention gives the same logits"""
    idx = torch.randint(61, (2, 12), generator=torch.Generator().manual_seed(29))
    for config in ({}, {"bias": False, "n_head": 4}):
        got = student.scenario("gpt_logits_with_mha", idx=idx, seed=4, **config)
        want = scenarios.gpt_logits_with_mha(REFERENCE, idx=idx, seed=4, **config)
        assert_tensor(got, want, "the GPT's logits", atol=1e-5, rtol=1e-5)

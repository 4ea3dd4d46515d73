import pytest
import torch
import torch.nn.functional as F

from gpt_lab.attention import (
    MultiHeadAttention,
    causal_mask,
    combined_mask,
    fused_attention,
    padding_mask,
    scaled_dot_product_attention,
)


def rand_qkv(*shape, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, d, generator=g) for _ in range(3)]


@pytest.mark.parametrize("shape", [(5,), (2, 7), (2, 3, 4)])
def test_matches_pytorch_without_mask(shape):
    q, k, v = rand_qkv(*shape)
    out, weights = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v))
    torch.testing.assert_close(weights.sum(-1), torch.ones(weights.shape[:-1]))


def test_matches_pytorch_causal():
    q, k, v = rand_qkv(2, 4, 6)
    out, weights = scaled_dot_product_attention(q, k, v, causal_mask(6))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert torch.all(weights.triu(1) == 0)


def test_matches_pytorch_with_padding_and_causal():
    q, k, v = rand_qkv(2, 3, 5)
    attention_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    mask = combined_mask(attention_mask, 5)
    out, _ = scaled_dot_product_attention(q, k, v, mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=~mask))


def test_scale_is_one_over_sqrt_dk():
    q = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    v = torch.eye(2)
    _, weights = scaled_dot_product_attention(q, k, v)
    expected = torch.softmax(torch.tensor([2.0 / 2.0, 0.0]), dim=0)  # sqrt(d_k) = 2
    torch.testing.assert_close(weights[0], expected)


def test_causal_mask_is_upper_triangular():
    assert causal_mask(3).tolist() == [[False, True, True], [False, False, True], [False, False, False]]
    # 2 new queries after 3 cached keys: absolute positions 3 and 4
    assert causal_mask(2, 5).tolist() == [[False] * 4 + [True], [False] * 5]
    with pytest.raises(ValueError):
        causal_mask(4, 2)


def test_padding_mask_shape_and_values():
    m = padding_mask(torch.tensor([[1, 1, 0], [0, 1, 1]]))
    assert m.shape == (2, 1, 1, 3)
    assert m[:, 0, 0].tolist() == [[False, False, True], [True, False, False]]
    with pytest.raises(ValueError, match="batch, seq_len"):
        padding_mask(torch.ones(3))


def test_fully_masked_rows_give_zeros_not_nan():
    q, k, v = rand_qkv(1, 2, 4)
    q.requires_grad_(True)
    attention_mask = torch.tensor([[0, 0, 1, 1]])  # left padding: queries 0 and 1 see nothing
    mask = combined_mask(attention_mask, 4)
    out, weights = scaled_dot_product_attention(q, k, v, mask)
    assert not torch.isnan(out).any()
    assert torch.all(out[..., :2, :] == 0) and torch.all(weights[..., :2, :] == 0)
    out.sum().backward()
    assert not torch.isnan(q.grad).any()
    fused = fused_attention(q, k, v, mask)
    torch.testing.assert_close(fused, out)


@pytest.mark.parametrize("with_mask", [False, True])
def test_multi_head_fast_path_equals_written_out(with_mask):
    torch.manual_seed(0)
    mha = MultiHeadAttention(n_embd=16, n_head=4).eval()
    x = torch.randn(3, 6, 16)
    attention_mask = torch.tensor([[1] * 6, [0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]])
    mask = combined_mask(attention_mask, 6) if with_mask else causal_mask(6)
    fast, none = mha(x, mask, is_causal=not with_mask)
    slow, weights = mha(x, mask, need_weights=True)
    assert none is None and weights.shape == (3, 4, 6, 6)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_multi_head_equals_per_head_reference():
    """Split into heads by hand and run PyTorch's attention on each: the module must agree."""
    torch.manual_seed(1)
    mha = MultiHeadAttention(n_embd=12, n_head=3).eval()
    x = torch.randn(2, 5, 12)
    y, _ = mha(x, causal_mask(5), need_weights=True)
    q, k, v = mha.c_attn(x).split(12, dim=2)
    heads = []
    for h in range(3):
        sl = slice(4 * h, 4 * h + 4)
        heads.append(F.scaled_dot_product_attention(q[..., sl], k[..., sl], v[..., sl], is_causal=True))
    torch.testing.assert_close(y, mha.c_proj(torch.cat(heads, dim=-1)), atol=1e-6, rtol=1e-5)


def test_custom_attention_fn_is_used():
    calls = []

    def spy(q, k, v, mask=None):
        calls.append(q.shape)
        return scaled_dot_product_attention(q, k, v, mask)

    mha = MultiHeadAttention(8, 2, attention_fn=spy)
    mha(torch.randn(1, 3, 8), causal_mask(3))
    assert calls == [(1, 2, 3, 4)]


def test_clear_errors():
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError, match="d_k"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 5))

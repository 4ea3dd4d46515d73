import math

import pytest
import torch
import torch.nn.functional as F

from gpt_lab.attention import scaled_dot_product_attention
from gpt_lab.kv_cache import KVCache
from gpt_lab.model import GPT, GPTConfig, load_hf_gpt2_state_dict
from gpt_lab.loss import shift_labels

SMALL = dict(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=32)


def tiny(seed=0, **kw):
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **kw})).eval()


def test_matches_huggingface_gpt2():
    transformers = pytest.importorskip("transformers")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    hf_config = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=2, n_head=4,
                                        bos_token_id=0, eos_token_id=0)
    hf = transformers.GPT2LMHeadModel(hf_config).eval()
    model = load_hf_gpt2_state_dict(tiny(seed=1), hf.state_dict())
    idx = torch.randint(0, 97, (3, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)
        # HF shifts labels inside its loss; ours takes already-shifted targets
        torch.testing.assert_close(model(idx, targets=shift_labels(idx))[1], hf(idx, labels=idx).loss,
                                   atol=1e-4, rtol=1e-4)


def test_hf_loading_rejects_wrong_layout():
    model = tiny()
    sd = {k: v for k, v in model.state_dict().items() if "ln_f" not in k}
    with pytest.raises(ValueError, match="missing"):
        load_hf_gpt2_state_dict(model, sd)


def test_lm_head_is_tied_to_token_embedding():
    model = tiny()
    assert model.lm_head.weight is model.transformer.wte.weight


def test_causality_future_tokens_do_not_change_past_logits():
    model = tiny()
    idx = torch.randint(0, 97, (1, 10))
    changed = idx.clone()
    changed[0, 7:] = (changed[0, 7:] + 1) % 97
    with torch.no_grad():
        torch.testing.assert_close(model(idx)[0][:, :7], model(changed)[0][:, :7])
        assert not torch.allclose(model(idx)[0][:, 7:], model(changed)[0][:, 7:])


@pytest.mark.parametrize("norm,key_shift", [("pre", False), ("post", False), ("pre", True)])
def test_left_padding_gives_the_same_logits_as_no_padding(norm, key_shift):
    model = tiny(norm=norm, key_shift=key_shift)
    idx = torch.randint(0, 97, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.long)
    mask[0, :4] = 0
    with torch.no_grad():
        padded = model(idx, attention_mask=mask)[0]
        alone = model(idx[:1, 4:])[0]
    torch.testing.assert_close(padded[0, 4:], alone[0], atol=1e-5, rtol=1e-5)


def test_pre_and_post_norm_differ_in_structure():
    x = torch.randint(0, 97, (1, 5))
    pre, post = tiny(norm="pre"), tiny(norm="post")
    post.load_state_dict(pre.state_dict())
    with torch.no_grad():
        assert not torch.allclose(pre(x)[0], post(x)[0])


@pytest.mark.parametrize("key_shift", [False, True])
def test_injected_attention_gives_the_same_logits(key_shift):
    """The written-out attention and the fused kernel agree, with and without smeared keys."""
    model = tiny(key_shift=key_shift)
    idx = torch.randint(0, 97, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, :5] = 0
    with torch.no_grad():
        fast = model(idx, attention_mask=mask)[0]
        model.set_attention(scaled_dot_product_attention)
        slow = model(idx, attention_mask=mask)[0]
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("key_shift", [False, True])
def test_cached_forward_matches_full_forward(key_shift):
    model = tiny(key_shift=key_shift)
    idx = torch.randint(0, 97, (2, 16))
    cache = KVCache.for_model(model, batch_size=2)
    with torch.no_grad():
        full = model(idx)[0]
        steps = [model(idx[:, :10], kv_cache=cache)[0]]
        for t in range(10, 16):
            steps.append(model(idx[:, t:t + 1], kv_cache=cache)[0])
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    assert cache.length == 16


def test_key_shift_is_off_by_default_and_adds_one_mix_per_head_and_channel():
    assert GPTConfig().key_shift is False
    assert not any("key_mix" in name for name, _ in tiny().named_parameters())
    mixes = [p for name, p in tiny(key_shift=True).named_parameters() if name.endswith("attn.key_mix")]
    head_dim = SMALL["n_embd"] // SMALL["n_head"]
    assert len(mixes) == SMALL["n_layer"] and all(p.shape == (SMALL["n_head"], head_dim) for p in mixes)


def test_smeared_keys_match_a_loop_over_positions():
    """Channel c of each head's key j becomes s k_j + (1 - s) k_{j-1} (k_{-1} = 0), s = sigmoid(key_mix[h, c]); the
    attention output equals PyTorch's causal attention over keys smeared by an explicit loop."""
    model = tiny(seed=3, key_shift=True)
    attn = model.transformer.h[0].attn
    with torch.no_grad():
        attn.key_mix.copy_(torch.randn(attn.key_mix.shape, generator=torch.Generator().manual_seed(0)) * 2)
        x = torch.randn(2, 7, SMALL["n_embd"])
        q, k, v = (attn.split_heads(t) for t in attn.c_attn(x).split(SMALL["n_embd"], dim=2))
        smeared = torch.zeros_like(k)
        for h in range(SMALL["n_head"]):
            for c in range(k.shape[-1]):
                s = 1 / (1 + math.exp(-float(attn.key_mix[h, c])))
                for j in range(7):
                    previous = k[:, h, j - 1, c] if j > 0 else torch.zeros_like(k[:, h, 0, c])
                    smeared[:, h, j, c] = s * k[:, h, j, c] + (1 - s) * previous
        y = F.scaled_dot_product_attention(q, smeared, v, is_causal=True).transpose(1, 2).reshape(2, 7, -1)
        expected = attn.c_proj(y)
        torch.testing.assert_close(attn(x, is_causal=True)[0], expected, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(attn(x, model_mask(7), need_weights=True)[0], expected, atol=1e-6, rtol=1e-5)


def model_mask(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), 1)


def test_attention_maps_rows_sum_to_one_and_are_causal():
    maps = tiny().attention_maps(torch.randint(0, 97, (1, 6)))
    assert len(maps) == 2 and maps[0].shape == (1, 4, 6, 6)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(1, 4, 6))
    assert torch.all(maps[1].triu(1) == 0)


def test_clear_errors():
    model = tiny()
    with pytest.raises(ValueError, match="longer than block_size"):
        model(torch.zeros(1, 33, dtype=torch.long))
    with pytest.raises(ValueError, match="position 32 has no embedding"):  # the same with an attention mask
        model(torch.zeros(1, 33, dtype=torch.long), attention_mask=torch.ones(1, 33))
    assert model(torch.zeros(1, 32, dtype=torch.long))[0].shape[1] == 32  # block_size tokens fit
    padded = torch.cat([torch.zeros(1, 1), torch.ones(1, 32)], dim=1)  # 33 slots, 32 real tokens: positions 0..31
    assert model(torch.zeros(1, 33, dtype=torch.long), attention_mask=padded)[0].shape[1] == 33
    with pytest.raises(ValueError, match="attention_mask has shape"):
        model(torch.zeros(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4))
    with pytest.raises(ValueError, match="divisible"):
        GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="norm"):
        GPTConfig(norm="sandwich")
    with pytest.raises(ValueError, match="batch, seq_len"):
        model(torch.zeros(5, dtype=torch.long))
    cache = KVCache.for_model(model, 1, max_length=4)
    with pytest.raises(RuntimeError, match="KV cache is full"):
        model(torch.zeros(1, 5, dtype=torch.long), kv_cache=cache)

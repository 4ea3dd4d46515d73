"""The KV cache: cached decoding equals running the whole sequence, token for token and logit for
logit (within 1e-5), for single prompts, left-padded batches and beam search, up to the context."""
import pytest
import torch

from gpt_lab import decoding
from gpt_lab.decoding import beam_search, generate, measure_generation, stream_generate, time_per_token
from gpt_lab.kv_cache import KVCache
from helpers import peaked_gpt

N_NEW = 200


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    """Logits up to ~6 as in a trained LM, where float32 rounding differences between the cached and
    the full forward stay ~4e-6 (under the 1e-5 asked)."""
    return peaked_gpt(block_size=256, std=0.25)


def recorded(monkeypatch, fn, *args, **kwargs):
    """Run fn and return (its result, the (B, V) logits of every decoding step)."""
    steps = []
    real = decoding.next_token_logits
    monkeypatch.setattr(decoding, "next_token_logits", lambda *a, **k: steps.append(real(*a, **k)) or steps[-1])
    try:
        return fn(*args, **kwargs), steps
    finally:
        monkeypatch.setattr(decoding, "next_token_logits", real)


def assert_steps_close(cached, full):
    assert len(cached) == len(full)
    for step, (a, b) in enumerate(zip(cached, full)):
        assert a.shape == b.shape, f"step {step}"
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=lambda m: f"step {step}: {m}")


# ----------------------------------------------------------------------------- the model with a cache

def test_incremental_forward_equals_full_forward(model):
    """Prefill 5 tokens, then one token per step: the logits of every position equal those of a
    forward pass over the whole sequence (independent of gpt_lab.decoding)."""
    torch.manual_seed(1)
    ids = torch.randint(50, (2, 40))
    with torch.no_grad():
        full, _ = model(ids)
        cache = KVCache.for_model(model, 2)
        parts = [model(ids[:, :5], kv_cache=cache)[0]]
        parts += [model(ids[:, t:t + 1], kv_cache=cache)[0] for t in range(5, 40)]
    assert cache.length == 40
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-5, rtol=0)


def test_incremental_forward_with_left_padding(model):
    """A left-padded row with a cache gives the logits of the same tokens without padding."""
    torch.manual_seed(2)
    short, long = torch.randint(50, (1, 12)), torch.randint(50, (1, 20))
    ids = torch.cat([torch.cat([torch.zeros(1, 8, dtype=torch.long), short], 1), long])  # (2, 20)
    mask = torch.ones(2, 20, dtype=torch.long)
    mask[0, :8] = 0
    with torch.no_grad():
        cache = KVCache.for_model(model, 2)
        logits = [model(ids[:, :10], attention_mask=mask[:, :10], kv_cache=cache)[0]]
        logits += [model(ids[:, t:t + 1], attention_mask=mask[:, :t + 1], kv_cache=cache)[0] for t in range(10, 20)]
        logits = torch.cat(logits, dim=1)
        torch.testing.assert_close(logits[0, 8:], model(short)[0][0], atol=1e-5, rtol=0)
        torch.testing.assert_close(logits[1], model(long)[0][0], atol=1e-5, rtol=0)


def test_full_cache_raises_and_reorder():
    cache = KVCache(n_layer=1, batch_size=3, n_head=1, head_dim=2, max_length=4)
    k = torch.arange(3.0)[:, None, None, None].expand(3, 1, 3, 2)
    cache.update(0, k, k)
    cache.advance(3)
    cache.reorder(torch.tensor([2, 2, 0]))
    assert cache.k[0, :, 0, 0, 0].tolist() == [2.0, 2.0, 0.0]
    with pytest.raises(RuntimeError, match="full"):
        cache.update(0, k[:, :, :2], k[:, :, :2])


# ----------------------------------------------------------------------------- decoding with and without

def test_greedy_cached_equals_uncached_single_prompt(model, monkeypatch):
    prompt = [3, 14, 15, 9, 26]
    cached, cached_steps = recorded(monkeypatch, generate, model, prompt, N_NEW, use_cache=True)
    full, full_steps = recorded(monkeypatch, generate, model, prompt, N_NEW, use_cache=False)
    assert len(cached[0]) == N_NEW and cached == full
    assert len(set(cached[0])) > 10  # a real sequence, not one token repeated
    assert_steps_close(cached_steps, full_steps)
    assert list(stream_generate(model, prompt, N_NEW, temperature=0)) == cached[0]


def test_greedy_cached_equals_uncached_padded_batch(model, monkeypatch):
    prompts = [[5, 6, 7, 8, 9], list(range(10, 22)), [1]]
    cached, cached_steps = recorded(monkeypatch, generate, model, prompts, N_NEW, use_cache=True)
    full, full_steps = recorded(monkeypatch, generate, model, prompts, N_NEW, use_cache=False)
    assert cached == full and all(len(row) == N_NEW for row in cached)
    assert_steps_close(cached_steps, full_steps)
    for prompt, row in zip(prompts, cached):  # each row is what the prompt gives alone
        assert generate(model, prompt, N_NEW)[0] == row


def test_sampling_cached_equals_uncached(model):
    kwargs = dict(strategy="sample", temperature=0.9, top_p=0.9, frequency_penalty=1.1, seed=3)
    prompts = [[4, 4, 4], [7]]
    assert generate(model, prompts, 60, use_cache=True, **kwargs) == generate(model, prompts, 60, use_cache=False,
                                                                              **kwargs)


def test_beam_search_cached_equals_uncached(model, monkeypatch):
    cached, cached_steps = recorded(monkeypatch, beam_search, model, [2, 7, 1], 3, N_NEW, use_cache=True)
    full, full_steps = recorded(monkeypatch, beam_search, model, [2, 7, 1], 3, N_NEW, use_cache=False)
    assert [h.tokens for h in cached] == [h.tokens for h in full] and len(cached[0].tokens) == N_NEW
    assert [h.logprob for h in cached] == pytest.approx([h.logprob for h in full], rel=1e-5)
    assert_steps_close(cached_steps, full_steps)
    assert cached_steps[-1].shape == (3, 50)  # three beams per step after the first


def test_generation_up_to_the_context_limit():
    """A 1-token prompt + block_size new tokens uses exactly the context; one more is an error."""
    model = peaked_gpt(block_size=32, seed=5, std=0.25)
    assert generate(model, [1], 32, use_cache=True) == generate(model, [1], 32, use_cache=False)
    assert len(generate(model, list(range(32)), 1)[0]) == 1
    with pytest.raises(ValueError, match=r"1 tokens \+ 33 new tokens needs 33 positions.*at most 32 new tokens"):
        generate(model, [1], 33)
    with pytest.raises(ValueError, match="at most 1 new tokens"):
        beam_search(model, list(range(32)), 2, 2)


def test_time_per_token_and_measure_generation(model):
    times = time_per_token(model, 6, use_cache=True, prompt_len=3)
    assert len(times) == 6 and all(t > 0 for t in times)
    result = measure_generation(model, [2, 4], repeats=1)
    assert result["positions"] == [1, 2, 3, 4]
    assert set(result["tokens_per_s"]) == {"cache", "no_cache"}
    assert len(result["speedup"]) == 2 and len(result["seconds_per_token"]["cache"]) == 4


def test_key_shift_cached_generation_equals_uncached(monkeypatch):
    """With smeared keys the cache keeps raw keys and smears them on reading, so greedy decoding of
    a left-padded batch gives the same tokens and logits with and without the cache, and each row
    is what its prompt gives alone."""
    from gpt_lab.model import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, block_size=128, n_layer=2, n_head=2, n_embd=32, key_shift=True)).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.normal_(0.0, 0.25)
    prompts = [[5, 6, 7, 8, 9], list(range(10, 22)), [1]]
    cached, cached_steps = recorded(monkeypatch, generate, model, prompts, 80, use_cache=True)
    full, full_steps = recorded(monkeypatch, generate, model, prompts, 80, use_cache=False)
    assert cached == full and len(set(cached[1])) > 5
    assert_steps_close(cached_steps, full_steps)
    for prompt, row in zip(prompts, cached):
        assert generate(model, prompt, 80)[0] == row

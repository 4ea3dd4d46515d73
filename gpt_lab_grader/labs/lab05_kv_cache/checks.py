"""Hidden checks of lab 5 (KV cache): the student's cache inside gpt_lab's GPT, against uncached runs.

Run by `gpt_lab_grader.checks.run_checks("lab05-kv-cache", notebook)`; the student's code is
reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py). Speed is checked the
deterministic way: by counting the positions the model processes.
"""
import pytest
import torch

from gpt_lab_grader.labs.adapters import assert_tensor
from gpt_lab.decoding import generate
from gpt_lab_grader.labs.lab05_kv_cache import scenarios
from gpt_lab_grader.labs.scenarios import tiny_gpt

LAB = "lab05-kv-cache"
REFERENCE = scenarios.reference_lab05()


def ids(B, T, seed=0, vocab_size=61):
    return torch.randint(vocab_size, (B, T), generator=torch.Generator().manual_seed(seed))


def left_padded(B, T, lengths):
    mask = torch.zeros(B, T, dtype=torch.long)
    for row, n in enumerate(lengths):
        mask[row, T - n:] = 1
    return mask


# --- the cache on its own


@pytest.mark.points(2)
@pytest.mark.parametrize("n_layer, B, H, hd, max_length, chunks, dtype", [
    (2, 3, 4, 8, 10, (6, 1, 1), torch.float32),
    (1, 1, 1, 4, 5, (1, 1, 1, 1, 1), torch.float32),
    (3, 2, 2, 16, 12, (4, 3, 5), torch.float64),
], ids=["prompt-then-tokens", "one-at-a-time-to-full", "chunks-float64"])
def test_cache_updates(student, n_layer, B, H, hd, max_length, chunks, dtype):
    """KVCache.update returns every layer's keys and values of all cached + new positions; length moves on advance only"""
    kwargs = dict(n_layer=n_layer, batch_size=B, n_head=H, head_dim=hd, max_length=max_length, chunks=chunks,
                  dtype=dtype)
    got = student.scenario("kv_cache_updates", **kwargs)
    want = scenarios.kv_cache_updates(REFERENCE, **kwargs)
    assert got["lengths"] == want["lengths"], \
        "KVCache.length is wrong: it should start at 0, stay put during update and grow by T on advance(T)"
    for i, (k, v, wk, wv) in enumerate(zip(got["keys"], got["values"], want["keys"], want["values"])):
        assert_tensor(k, wk, f"the keys returned by update call {i}", exact=True)
        assert_tensor(v, wv, f"the values returned by update call {i}", exact=True)


@pytest.mark.points(1)
@pytest.mark.parametrize("max_length, filled, new", [(5, 4, 2), (3, 0, 4), (6, 6, 1)])
def test_cache_full_raises(student, max_length, filled, new):
    """KVCache.update raises a RuntimeError when the new positions do not fit in max_length"""
    got = student.scenario("kv_cache_overflow", max_length=max_length, filled=filled, new=new)
    assert got == "RuntimeError", (f"{filled} cached + {new} new positions > max_length {max_length}: update should "
                                   f"raise a RuntimeError, " + (f"it raised {got}" if got else "it raised nothing"))


@pytest.mark.points(1)
def test_cache_exactly_full_is_fine(student):
    """KVCache.update accepts positions that fill the cache exactly"""
    got = student.scenario("kv_cache_overflow", max_length=5, filled=3, new=2)
    assert got == "", f"3 cached + 2 new positions fit in max_length 5, but update raised {got}"


# --- the cache inside the GPT


@pytest.mark.points(2)
@pytest.mark.parametrize("B, chunks, padded, dtype", [
    (1, (5, 1, 1, 1, 1), False, torch.float32),
    (3, (7, 1, 1, 1), True, torch.float32),
    (2, (1,) * 10, True, torch.float32),
    (2, (4, 3, 1, 2), False, torch.float64),
    (1, (31, 1), False, torch.float32),
], ids=["prefill-then-steps", "padded-batch", "token-by-token", "chunks-float64", "full-context"])
def test_cached_forward_matches_full_pass(student, B, chunks, padded, dtype):
    """a GPT run chunk by chunk with your KVCache gives the logits of one full, uncached pass"""
    T = sum(chunks)
    idx = ids(B, T, seed=T)
    mask = left_padded(B, T, [T - 3 * row for row in range(B)]) if padded else None
    got = student.scenario("cached_forward_logits", idx=idx, chunks=chunks, attention_mask=mask, seed=1, dtype=dtype)
    with torch.no_grad():
        want = tiny_gpt(1).to(dtype)(idx, attention_mask=mask)[0]
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    assert_tensor(got, want, "the logits with your cache", atol=tol, rtol=tol)


@pytest.mark.points(1)
def test_cache_with_other_shapes(student):
    """your KVCache inside a GPT with 4 layers, 4 heads and post-LayerNorm blocks"""
    idx = ids(2, 9, seed=3, vocab_size=23)
    config = dict(vocab_size=23, n_layer=4, n_head=4, n_embd=32, norm="post")
    got = student.scenario("cached_forward_logits", idx=idx, chunks=(3, 1, 1, 4), seed=2, **config)
    with torch.no_grad():
        want = tiny_gpt(2, **config)(idx)[0]
    assert_tensor(got, want, "the logits with your cache", atol=1e-5, rtol=1e-5)


# --- next_token_logits


def check_steps(student, **kwargs):
    got = student.scenario("next_token_logits_steps", **kwargs)
    want = scenarios.next_token_logits_steps(REFERENCE, **kwargs)
    assert_tensor(got["logits"], want["logits"], "the next-token logits after each prefix", atol=1e-5, rtol=1e-5)
    return got, want


@pytest.mark.points(2)
@pytest.mark.parametrize("B, T, start, padded", [(1, 12, 4, False), (3, 10, 6, True), (2, 8, 1, False)],
                         ids=["one-prompt", "padded-batch", "one-token-prompt"])
def test_next_token_logits_with_cache(student, B, T, start, padded):
    """next_token_logits with a cache: the right logits, and only the positions not cached yet run"""
    mask = left_padded(B, T, [T - 2 * row for row in range(B)]) if padded else None
    got, want = check_steps(student, idx=ids(B, T, seed=4), start=start, attention_mask=mask, seed=5)
    assert got["positions"] == want["positions"], \
        f"with a cache, the model should process {want['positions']} positions in all, not {got['positions']}"


@pytest.mark.points(1)
def test_next_token_logits_without_cache(student):
    """next_token_logits without a cache runs the whole sequence and returns the last position's logits"""
    mask = left_padded(2, 7, [7, 4])
    check_steps(student, idx=ids(2, 7, seed=6), start=3, attention_mask=mask, use_cache=False, seed=7)


# --- greedy generation


def check_generation(student, **kwargs):
    got = student.scenario("greedy_generation", **kwargs)
    tokens = got["tokens"]
    assert all(type(t) is int for t in tokens), "greedy_generate should return a list of Python ints"
    model = tiny_gpt(kwargs.get("seed", 0), **{k: v for k, v in kwargs.items() if k in ("vocab_size", "block_size")})
    want = generate(model, list(kwargs["prompt"]), kwargs["max_new_tokens"], strategy="greedy",
                    eos_id=kwargs.get("eos_id"), use_cache=False)[0]
    assert tokens == want, "greedy_generate's tokens differ from uncached greedy decoding"
    return got


@pytest.mark.points(2)
@pytest.mark.parametrize("prompt, n_new, seed", [([1, 2, 3], 10, 0), ([7], 32, 1), ([4] * 20, 13, 2), ([9, 8], 1, 3)],
                         ids=["short", "one-token-prompt-full-context", "long-prompt-full-context", "one-new-token"])
def test_generation_equals_uncached(student, prompt, n_new, seed):
    """cached greedy_generate gives the tokens of uncached greedy decoding, up to the full context"""
    got = check_generation(student, prompt=prompt, max_new_tokens=n_new, seed=seed)
    assert got["positions"] <= len(prompt) + n_new, \
        (f"with the cache, {len(prompt)} prompt + {n_new} new tokens should cost {len(prompt) + n_new - 1} positions, "
         f"your greedy_generate made the model process {got['positions']}: is the cache used?")


@pytest.mark.points(1)
def test_generation_without_cache(student):
    """greedy_generate(use_cache=False) gives the same tokens"""
    check_generation(student, prompt=[3, 1, 4, 1, 5], max_new_tokens=9, use_cache=False, seed=4)


@pytest.mark.points(1)
def test_generation_stops_at_eos(student):
    """greedy_generate stops before the first end token, with and without the cache"""
    model = tiny_gpt(5)
    tokens = generate(model, [2, 7], 12, strategy="greedy")[0]
    eos = tokens[4]
    for use_cache in (True, False):
        got = check_generation(student, prompt=[2, 7], max_new_tokens=12, eos_id=eos, use_cache=use_cache, seed=5)
        assert eos not in got["tokens"], "the end token must not be part of the result"

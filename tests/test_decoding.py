"""gpt_lab.decoding against independent references: the lecture's numbers, exact renormalised
distributions (chi-square), exhaustive search on a tiny vocabulary, and a step-by-step loop."""
import itertools
import math

import pytest
import torch

from gpt_lab import decoding
from gpt_lab.decoding import (Hypothesis, apply_additive_penalties, apply_penalties, apply_temperature, beam_search,
                              generate, greedy, process_logits, sample, stream_generate, token_counts, top_k_filter,
                              top_p_filter)
from helpers import peaked_gpt


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    return peaked_gpt()


# ----------------------------------------------------------------------------- penalties

LECTURE_LOGITS = torch.tensor([0.8, 0.9, 0.1, 0.4])
LECTURE_HISTORY = [0, 1, 0, 2, 0, 0]  # a, b, a, c, a, a


def test_penalties_lecture_example():
    out = apply_penalties(LECTURE_LOGITS, LECTURE_HISTORY, frequency_penalty=1.1, presence_penalty=1.2)
    torch.testing.assert_close(LECTURE_LOGITS / out, torch.tensor([1.6, 1.3, 1.3, 1.0]))
    torch.testing.assert_close(out.softmax(-1), torch.tensor([0.2651, 0.3213, 0.1737, 0.2399]), atol=5e-5, rtol=0)
    # without penalties the lecture prints [0.305, 0.338, 0.152, 0.205] (0.3056 truncated)
    torch.testing.assert_close(LECTURE_LOGITS.softmax(-1), torch.tensor([0.305, 0.338, 0.152, 0.205]), atol=1e-3,
                               rtol=0)


def test_penalties_shift_negative_logits_and_temperature():
    z = torch.tensor([-1.0, 0.5, 2.0, 0.0])
    history = [2, 2, 1]  # counts [0, 1, 2, 0]
    k = torch.tensor([1.0, 1 + 0.5 * 1 + 0.2, 1 + 0.5 * 2 + 0.2, 1.0])
    expected = torch.tensor([0.0, 1.5, 3.0, 1.0]) / (2.0 * k)  # shifted by the minimum, -1
    torch.testing.assert_close(apply_penalties(z, history, 1.5, 1.2, temperature=2.0), expected)
    # non-negative logits are not shifted; penalties of 1 only apply the temperature
    assert torch.equal(apply_penalties(LECTURE_LOGITS, LECTURE_HISTORY, 1.0, 1.0), LECTURE_LOGITS)
    torch.testing.assert_close(apply_penalties(z, history, 1.0, 1.0, 0.5).softmax(-1), (z / 0.5).softmax(-1))
    # -inf logits (already filtered) stay -inf and do not set the shift
    zf = torch.tensor([float("-inf"), -1.0, 1.0])
    out = apply_penalties(zf, [2], 2.0, 1.0)
    assert out[0] == float("-inf") and torch.allclose(out[1:], torch.tensor([0.0, 2.0 / 2.0]))


def test_penalties_batched_history_forms():
    torch.manual_seed(0)
    logits = torch.randn(3, 6)
    rows = [[1, 1, 4], [0], [5, 5, 5, 2, 1]]
    one_by_one = torch.stack([apply_penalties(logits[i], rows[i], 1.3, 1.1) for i in range(3)])
    padded = torch.tensor([[-1, -1, 1, 1, 4], [-1, -1, -1, -1, 0], [5, 5, 5, 2, 1]])  # -1 = padding
    torch.testing.assert_close(apply_penalties(logits, rows, 1.3, 1.1), one_by_one)
    torch.testing.assert_close(apply_penalties(logits, padded, 1.3, 1.1), one_by_one)
    assert token_counts(rows, 6).tolist() == [[0, 2, 0, 0, 1, 0], [1, 0, 0, 0, 0, 0], [0, 1, 1, 0, 0, 3]]
    with pytest.raises(ValueError, match="does not match"):
        apply_penalties(logits, [[1], [2]], 1.3, 1.1)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        apply_penalties(logits, [[1], [2], [6]], 1.3, 1.1)


def test_additive_penalties_and_shift_dependence():
    z = LECTURE_LOGITS
    out = apply_additive_penalties(z, LECTURE_HISTORY, frequency_penalty=0.1, presence_penalty=0.2)
    torch.testing.assert_close(out, z - 0.1 * torch.tensor([4.0, 1, 1, 0]) - 0.2 * torch.tensor([1.0, 1, 1, 0]))
    # additive: adding a constant to every logit changes nothing; multiplicative: it does
    shifted = apply_additive_penalties(z + 3, LECTURE_HISTORY, 0.1, 0.2)
    torch.testing.assert_close(shifted.softmax(-1), out.softmax(-1))
    mult = apply_penalties(z, LECTURE_HISTORY, 1.1, 1.2).softmax(-1)
    assert not torch.allclose(apply_penalties(z + 3, LECTURE_HISTORY, 1.1, 1.2).softmax(-1), mult, atol=1e-3)


@pytest.mark.parametrize("kwargs", [dict(frequency_penalty=0.9, presence_penalty=1.0),
                                    dict(frequency_penalty=1.0, presence_penalty=0.5),
                                    dict(frequency_penalty=1.1, presence_penalty=1.2, temperature=0.0)])
def test_penalty_errors(kwargs):
    with pytest.raises(ValueError, match="must be"):
        apply_penalties(LECTURE_LOGITS, LECTURE_HISTORY, **kwargs)


def test_generate_with_penalties_matches_step_by_step_reference(model):
    """Greedy with penalties == a loop that runs the full sequence and applies the lecture's formula
    by hand (history = prompt + generated tokens, min-shift when a logit is negative)."""
    prompt, fp, pp = [3, 1, 4, 1, 5], 1.3, 1.5
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(25):
            z = model(torch.tensor([ids]))[0][0, -1].tolist()
            lo = min(z)
            z = [v - lo for v in z] if lo < 0 else z
            k = [1 + (fp - 1) * ids.count(i) + (pp - 1) * (i in ids) for i in range(len(z))]
            scores = [v / ki for v, ki in zip(z, k)]
            ids.append(max(range(len(z)), key=scores.__getitem__))
    for use_cache in (True, False):
        assert generate(model, prompt, 25, frequency_penalty=fp, presence_penalty=pp, use_cache=use_cache)[0] \
            == ids[len(prompt):]
    plain = generate(model, prompt, 25)[0]
    assert len(set(ids[len(prompt):])) > len(set(plain))  # penalties break the greedy loop


# ----------------------------------------------------------------------------- filters

def test_greedy_and_sample_shapes():
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 7)
    assert torch.equal(greedy(logits), logits.argmax(-1))
    ids = sample(logits, torch.Generator().manual_seed(0))
    assert ids.shape == (2, 3) and ids.dtype == torch.long and int(ids.max()) < 7
    assert torch.equal(ids, sample(logits, torch.Generator().manual_seed(0)))
    one_hot = torch.full((4, 5), float("-inf"))
    one_hot[torch.arange(4), torch.tensor([4, 0, 2, 2])] = 0.0
    assert sample(one_hot).tolist() == [4, 0, 2, 2]


def test_top_k_filter_edges():
    z = torch.tensor([1.0, 3.0, 2.0, 0.0])
    inf = float("-inf")
    assert top_k_filter(z, 1).tolist() == [inf, 3.0, inf, inf]
    assert top_k_filter(z, 2).tolist() == [inf, 3.0, 2.0, inf]
    assert torch.equal(top_k_filter(z, 4), z) and torch.equal(top_k_filter(z, 100), z)
    # ties with the k-th largest are all kept
    assert top_k_filter(torch.tensor([1.0, 3.0, 3.0, 0.0]), 1).tolist() == [inf, 3.0, 3.0, inf]
    assert top_k_filter(torch.tensor([3.0, 2.0, 2.0, 1.0]), 2).tolist() == [3.0, 2.0, 2.0, inf]
    # batched rows are independent
    torch.manual_seed(1)
    zb = torch.randn(2, 3, 9)
    expected = torch.stack([torch.stack([top_k_filter(zb[i, j], 3) for j in range(3)]) for i in range(2)])
    assert torch.equal(top_k_filter(zb, 3), expected)
    assert (torch.isfinite(top_k_filter(zb, 3)).sum(-1) == 3).all()
    for bad in (0, -1, 1.5):
        with pytest.raises(ValueError, match="top_k"):
            top_k_filter(z, bad)


def test_top_p_filter_edges():
    z = torch.tensor([0.5, 0.25, 0.15, 0.1]).log()
    kept = lambda p: torch.isfinite(top_p_filter(z, p)).tolist()  # noqa: E731
    assert kept(0.3) == [True, False, False, False]
    assert kept(0.6) == [True, True, False, False]          # 0.5 < 0.6 <= 0.75
    assert kept(0.8) == [True, True, True, False]           # 0.75 < 0.8 <= 0.9
    assert kept(0.95) == [True, True, True, True]
    assert kept(1e-9) == [True, False, False, False]        # always at least one token
    tail = torch.tensor([0.0, -60.0])                       # a token with probability ~1e-26
    assert torch.equal(top_p_filter(tail, 1.0), tail)
    # ties in probability with the last kept token are kept
    assert torch.isfinite(top_p_filter(torch.tensor([0.4, 0.3, 0.3]).log(), 0.5)).tolist() == [True, True, True]
    zb = torch.randn(4, 11, generator=torch.Generator().manual_seed(2))
    assert torch.equal(top_p_filter(zb, 0.7), torch.stack([top_p_filter(r, 0.7) for r in zb]))
    for bad in (0.0, -0.1, 1.1):
        with pytest.raises(ValueError, match="top_p"):
            top_p_filter(z, bad)
    for bad in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            apply_temperature(z, bad)


def _renormalised(logits: list[float], temperature=1.0, k=None, p=None) -> list[float]:
    """The exact distribution after temperature, top-k and top-p, written independently."""
    w = [math.exp(v / temperature) for v in logits]
    probs = [x / sum(w) for x in w]
    order = sorted(range(len(probs)), key=lambda i: -probs[i])
    keep = order[:k] if k is not None else order
    if p is not None:
        mass = sum(probs[i] for i in keep)
        renorm = [probs[i] / mass for i in keep]
        n, acc = 0, 0.0
        while acc < p:
            acc += renorm[n]
            n += 1
        keep = keep[:n]
    total = sum(probs[i] for i in keep)
    return [probs[i] / total if i in keep else 0.0 for i in range(len(probs))]


def _chi_square_p_value(counts: torch.Tensor, expected_probs: list[float]) -> float:
    """Pearson's chi-square test of observed counts against a distribution (over its support).

    p-value = P(Chi2(df) >= statistic) = regularised upper incomplete gamma Q(df/2, statistic/2),
    with df = support size - 1. Tokens outside the support must have zero counts (checked apart).
    """
    n = counts.sum().item()
    support = [i for i, q in enumerate(expected_probs) if q > 0]
    stat = sum((counts[i].item() - n * expected_probs[i]) ** 2 / (n * expected_probs[i]) for i in support)
    df = len(support) - 1
    return torch.special.gammaincc(torch.tensor(df / 2, dtype=torch.float64),
                                   torch.tensor(stat / 2, dtype=torch.float64)).item()


LOGITS8 = [1.2, 0.3, -0.5, 2.0, 0.0, 1.9, -1.5, 0.7]


@pytest.mark.parametrize("temperature,k,p", [(1.0, None, None), (0.7, None, None), (1.5, 3, None),
                                             (1.0, None, 0.6), (0.8, 5, 0.8), (1.0, 1, None), (1.0, None, 1.0)])
def test_sampled_frequencies_match_renormalised_distribution(temperature, k, p):
    """20,000 draws on a fixed seed; the test rejects at significance 0.001 (a correct sampler fails
    one seed in a thousand, and the seed is fixed)."""
    n = 20_000
    logits = torch.tensor(LOGITS8).expand(n, -1)
    filtered = process_logits(logits, temperature=temperature, top_k=k, top_p=p)
    ids = sample(filtered, torch.Generator().manual_seed(1234))
    counts = torch.bincount(ids, minlength=8)
    expected = _renormalised(LOGITS8, temperature, k, p)
    assert all(c == 0 for c, q in zip(counts.tolist(), expected) if q == 0)  # filtered tokens never drawn
    if sum(q > 0 for q in expected) > 1:
        assert _chi_square_p_value(counts, expected) > 1e-3


def test_chi_square_test_detects_a_wrong_distribution():
    """The same test has power: draws at temperature 0.7 are rejected as temperature-1 draws."""
    n = 20_000
    ids = sample(apply_temperature(torch.tensor(LOGITS8).expand(n, -1), 0.7), torch.Generator().manual_seed(1234))
    assert _chi_square_p_value(torch.bincount(ids, minlength=8), _renormalised(LOGITS8, 1.0)) < 1e-6


# ----------------------------------------------------------------------------- generate / stream

def test_sampling_reproducible_and_streaming_matches(model):
    kwargs = dict(temperature=1.3, top_k=20, top_p=0.95)
    a = generate(model, [1, 2, 3], 30, strategy="sample", seed=7, **kwargs)
    assert a == generate(model, [1, 2, 3], 30, strategy="sample", seed=7, **kwargs)
    assert a != generate(model, [1, 2, 3], 30, strategy="sample", seed=8, **kwargs)
    assert list(stream_generate(model, [1, 2, 3], 30, seed=7, **kwargs)) == a[0]
    assert list(stream_generate(model, [1, 2, 3], 30, temperature=0)) == generate(model, [1, 2, 3], 30)[0]
    b = generate(model, [[1, 2, 3], [4, 5]], 30, strategy="sample", seed=7, **kwargs)
    assert b == generate(model, [[1, 2, 3], [4, 5]], 30, strategy="sample", seed=7, **kwargs)
    assert len(b) == 2 and all(len(row) == 30 for row in b)


def test_generate_stops_at_eos(model, monkeypatch):
    tokens, other = generate(model, [[7, 8, 9], [2]], 40)
    eos = next(t for t in tokens[3:] if t not in other)  # ends the first row only
    first = tokens.index(eos)
    steps = []
    real = decoding.next_token_logits
    monkeypatch.setattr(decoding, "next_token_logits", lambda *a, **k: steps.append(1) or real(*a, **k))
    assert generate(model, [7, 8, 9], 40, eos_id=eos) == [tokens[:first]]
    assert len(steps) == first + 1  # no model call after the EOS
    monkeypatch.undo()
    assert list(stream_generate(model, [7, 8, 9], 40, temperature=0, eos_id=eos)) == tokens[:first]
    # in a batch, each row stops at its own EOS; the other rows go on
    assert generate(model, [[7, 8, 9], [2]], 40, eos_id=eos) == [tokens[:first], other]
    assert generate(model, [7, 8, 9], 0) == [[]]


def test_generate_keeps_model_and_autograd_modes(model):
    model.train()
    generate(model, [1, 2], 3)
    beam_search(model, [1, 2], 2, 3)
    assert model.training
    model.eval()
    tokens = stream_generate(model, [1, 2], 3, temperature=0)
    next(tokens)
    assert torch.is_grad_enabled()  # no_grad only while the stream computes
    assert len(list(tokens)) == 2


@pytest.mark.parametrize("kwargs,match", [
    (dict(prompt_ids=[]), "empty"),
    (dict(prompt_ids=[[1, 2], []]), "prompt 1 is empty"),
    (dict(prompt_ids=[1, 50]), "outside the model's vocabulary"),
    (dict(prompt_ids=list(range(1, 50)) + [1] * 16), "longer than the model's context"),
    (dict(prompt_ids=[1] * 60, max_new_tokens=6), "ask for at most 5 new tokens"),
    (dict(strategy="sample", temperature=0.0), "temperature"),
    (dict(strategy="sample", temperature=-1.0), "temperature"),
    (dict(top_k=0), "top_k"),
    (dict(top_p=0.0), "top_p"),
    (dict(top_p=1.5), "top_p"),
    (dict(frequency_penalty=0.5), "frequency_penalty"),
    (dict(presence_penalty=0.0), "presence_penalty"),
    (dict(strategy="nucleus"), "strategy"),
    (dict(strategy="beam", beam_width=0), "beam_width"),
    (dict(beam_width=3), "strategy='beam'"),
    (dict(strategy="beam", beam_width=2, top_k=5), "beam search"),
    (dict(max_new_tokens=-1), "max_new_tokens"),
])
def test_generate_errors(model, kwargs, match):
    args = dict(prompt_ids=[1, 2, 3], max_new_tokens=5) | kwargs
    with pytest.raises(ValueError, match=match):
        generate(model, **args)


def test_stream_errors_raise_at_call(model):
    with pytest.raises(ValueError, match="temperature"):
        stream_generate(model, [1, 2], 5, temperature=-1)
    with pytest.raises(ValueError, match="one prompt"):
        stream_generate(model, [[1, 2], [3]], 5)


# ----------------------------------------------------------------------------- beam search

def _sequence_logprobs(model, prompt: list[int], continuations: list[list[int]]) -> torch.Tensor:
    """Total log-probability of each continuation, from one full forward pass per batch."""
    ids = torch.tensor([prompt + c for c in continuations])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids)[0].float(), dim=-1)
    n = len(prompt)
    targets = ids[:, n:]
    return logp[:, n - 1:-1].gather(-1, targets[..., None]).squeeze(-1).sum(-1)


def test_beam_width_one_is_greedy(model):
    hyps = beam_search(model, [5, 6, 7], beam_width=1, max_new_tokens=20)
    assert len(hyps) == 1 and hyps[0].tokens == generate(model, [5, 6, 7], 20)[0]
    assert hyps[0].logprob == pytest.approx(_sequence_logprobs(model, [5, 6, 7], [hyps[0].tokens]).item(), rel=1e-5)
    assert generate(model, [[5, 6, 7], [1]], 20, strategy="beam", beam_width=1) == generate(model, [[5, 6, 7], [1]], 20)


def test_beam_search_equals_exhaustive_search():
    """V = 5, L = 3 new tokens, beam width V ** (L - 1) = 25: the 25 best of all 125 sequences."""
    model = peaked_gpt(vocab_size=5, block_size=8, seed=3, std=0.8)
    prompt, V, L, width = [1, 4], 5, 3, 25
    everything = [list(s) for s in itertools.product(range(V), repeat=L)]
    logprobs = _sequence_logprobs(model, prompt, everything)
    order = logprobs.argsort(descending=True)[:width]
    hyps = beam_search(model, prompt, beam_width=width, max_new_tokens=L)
    assert [h.tokens for h in hyps] == [everything[i] for i in order]
    torch.testing.assert_close(torch.tensor([h.logprob for h in hyps]), logprobs[order], atol=1e-5, rtol=1e-5)
    assert all(not h.finished and h.score == pytest.approx(h.logprob / L) for h in hyps)
    assert generate(model, prompt, L, strategy="beam", beam_width=width) == [everything[order[0]]]


def test_beam_search_with_eos_equals_exhaustive_search():
    """With EOS = 0 the candidates are every sequence that ends at its first EOS or runs L tokens
    without one; length_penalty = 0 ranks them by total log-probability (EOS included)."""
    model = peaked_gpt(vocab_size=5, block_size=8, seed=4, std=0.8)
    prompt, V, L, eos, width = [2, 3], 5, 3, 0, 25
    candidates = []  # (tokens without EOS, tokens scored)
    for n in range(L + 1):
        for s in itertools.product(range(1, V), repeat=n):
            candidates.append((list(s), list(s) + [eos] if n < L else list(s)))
    logprobs = torch.cat([_sequence_logprobs(model, prompt, [scored for _, scored in candidates if len(scored) == n])
                          for n in range(1, L + 1)])  # candidates are listed by length
    order = logprobs.argsort(descending=True)[:width]
    hyps = beam_search(model, prompt, width, L, eos_id=eos, length_penalty=0.0)
    assert [h.tokens for h in hyps] == [candidates[i][0] for i in order]
    assert [h.finished for h in hyps] == [len(candidates[i][0]) < L for i in order]
    torch.testing.assert_close(torch.tensor([h.logprob for h in hyps]), logprobs[order], atol=1e-5, rtol=1e-5)
    assert any(h.finished for h in hyps) and any(not h.finished for h in hyps)


def test_beam_search_keeps_finished_hypothesis(model):
    greedy_tokens = generate(model, [9, 9], 10)[0]
    eos = greedy_tokens[1]  # greedy's second token ends the best beam after one token
    hyps = beam_search(model, [9, 9], beam_width=3, max_new_tokens=10, eos_id=eos, length_penalty=0.5)
    done = [h for h in hyps if h.finished]
    assert done and all(eos not in h.tokens for h in hyps)
    for h in done:
        expected = _sequence_logprobs(model, [9, 9], [h.tokens + [eos]]).item()
        assert h.logprob == pytest.approx(expected, rel=1e-5)
        assert h.score == pytest.approx(h.logprob / (len(h.tokens) + 1) ** 0.5)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
    assert isinstance(hyps[0], Hypothesis) and len(hyps) <= 3


def test_next_token_logits_is_the_one_step(model, monkeypatch):
    """generate, stream_generate and beam_search all get their logits from next_token_logits."""
    calls = []
    real = decoding.next_token_logits
    monkeypatch.setattr(decoding, "next_token_logits", lambda *a, **k: calls.append(1) or real(*a, **k))
    generate(model, [1, 2], 4)
    list(stream_generate(model, [1, 2], 4, seed=0))
    beam_search(model, [1, 2], 2, 4)
    assert len(calls) == 12


def test_function_body_ends_where_the_function_does():
    sig = "def f(x):\n"
    assert decoding.function_body(sig, "    return x\n\ndef g():\n    pass", True) == "def f(x):\n    return x\n"
    # cut by the token budget: the last, possibly broken, line is dropped
    assert decoding.function_body(sig, "    y = x + 1\n    return (y", False) == "def f(x):\n    y = x + 1"
    assert decoding.function_body(sig, "    y = x + 1\n    return y", True) == "def f(x):\n    y = x + 1\n    return y"


def test_parse_rate_counts_bodies_that_parse(monkeypatch):
    """With generation scripted (one body per signature), the rate is the share of bodies that
    parse; a body cut by the token budget loses its last line before parsing."""
    from gpt_lab.tokenizer import get_tokenizer

    tok = get_tokenizer()
    bodies = {"def f(x):": "    return 1\n\nprint(f(2))", "def g(a, b):": "    return (a",
              "def h():": "    x = 1\n    return (x"}
    model = type("M", (), {"config": type("C", (), {"block_size": 64})()})()

    def scripted(model, ids, max_new_tokens, **kwargs):
        out = []
        for prompt in ids:
            body = tok.encode(bodies[tok.decode(prompt).rstrip("\n")])[:max_new_tokens]
            out.append(body)
        return out

    monkeypatch.setattr(decoding, "generate", scripted)
    # f parses; g is "def g(a, b):\n    return (a" in full (ended early): a syntax error;
    # h ran out of budget, so its broken last line is dropped and "x = 1" parses
    n_h = len(tok.encode(bodies["def h():"]))
    assert decoding.parse_rate(model, tok, list(bodies), max_new_tokens=n_h) == pytest.approx(2 / 3)

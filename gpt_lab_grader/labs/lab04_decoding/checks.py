"""Hidden checks of lab 4 (decoding), against gpt_lab.decoding on seeded inputs and tiny models.

Run by `gpt_lab_grader.checks.run_checks("lab04-decoding", notebook)`; the student's code is
reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py).
"""
import itertools
import math

import pytest
import torch

from gpt_lab_grader.labs.adapters import assert_tensor, expect_tuple, expect_value_error, namespace
from gpt_lab import decoding
from gpt_lab_grader.labs.lab04_decoding import scenarios

LAB = "lab04-decoding"
REFERENCE = namespace(beam_search=decoding.beam_search)
INF = float("inf")


def rand(*shape, seed=0, dtype=torch.float32, scale=1.0):
    return (torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * scale).to(dtype)



def check_unchanged_input(student, name, logits, *args):
    out, after = expect_tuple(student.scenario("filter_and_input", function=name, logits=logits, args=args), 2, name)
    assert_tensor(after, logits, f"the logits passed to {name} (after the call: do not modify the input in place)",
                  exact=True)
    return out


# --- temperature


@pytest.mark.points(1)
@pytest.mark.parametrize("shape, temperature, dtype", [((7,), 0.5, torch.float32), ((3, 11), 1.7, torch.float32),
                                                       ((2, 3, 5), 0.25, torch.float64)],
                         ids=["1d", "2d", "3d-float64"])
def test_temperature_values(student, shape, temperature, dtype):
    """apply_temperature divides the logits by the temperature (any leading axes, dtype kept)"""
    z = rand(*shape, seed=1, dtype=dtype)
    assert_tensor(student.apply_temperature(z, temperature), decoding.apply_temperature(z, temperature),
                  f"apply_temperature(logits {tuple(shape)}, {temperature})")


@pytest.mark.points(1)
def test_temperature_does_not_modify_input(student):
    """apply_temperature returns a new tensor and leaves the logits it is given unchanged (no in-place division)"""
    z = rand(3, 10, seed=2)
    out = check_unchanged_input(student, "apply_temperature", z, 0.5)
    assert_tensor(out, decoding.apply_temperature(z, 0.5), "apply_temperature(logits, 0.5)")


# --- top-k


@pytest.mark.points(1)
@pytest.mark.parametrize("shape, k, dtype", [((10,), 3, torch.float32), ((4, 9), 1, torch.float32),
                                             ((2, 3, 12), 5, torch.float64), ((3, 6), 6, torch.float32),
                                             ((3, 6), 50, torch.float32), ((2, 8), 7, torch.float32)],
                         ids=["1d", "k1", "3d-float64", "k-equals-V", "k-above-V", "k-V-minus-1"])
def test_top_k_values(student, shape, k, dtype):
    """top_k_filter keeps the k largest logits of each row and sets the others to -inf"""
    z = rand(*shape, seed=3, dtype=dtype)
    assert_tensor(student.top_k_filter(z, k), decoding.top_k_filter(z, k), f"top_k_filter(logits {tuple(shape)}, {k})")


@pytest.mark.points(2)
@pytest.mark.parametrize("k", [1, 2, 3])
def test_top_k_ties(student, k):
    """top_k_filter keeps every token tied with the k-th largest logit (k = 1 included)"""
    z = torch.randint(0, 4, (6, 9), generator=torch.Generator().manual_seed(4)).float()
    assert_tensor(student.top_k_filter(z, k), decoding.top_k_filter(z, k), f"top_k_filter(tied logits, {k})")


@pytest.mark.points(1)
def test_top_k_with_minus_inf(student):
    """top_k_filter on logits that already hold -inf (filtered before), k above the number of finite logits"""
    z = rand(3, 8, seed=5)
    z[0, :5] = -INF
    z[1, 2] = -INF
    for k in (2, 4):
        assert_tensor(student.top_k_filter(z, k), decoding.top_k_filter(z, k), f"top_k_filter(logits with -inf, {k})")


# --- top-p


@pytest.mark.points(1)
@pytest.mark.parametrize("shape, p, dtype, scale", [((20,), 0.5, torch.float32, 1.0), ((5, 30), 0.9, torch.float32, 2.0),
                                                    ((2, 3, 40), 0.3, torch.float64, 3.0),
                                                    ((4, 25), 0.99, torch.float32, 1.0),
                                                    ((6, 16), 0.01, torch.float32, 2.0)],
                         ids=["1d", "p0.9", "3d-float64", "p0.99", "tiny-p-keeps-one"])
def test_top_p_values(student, shape, p, dtype, scale):
    """top_p_filter keeps the smallest most-probable set whose probability reaches p, at least one token"""
    z = rand(*shape, seed=8, dtype=dtype, scale=scale)
    assert_tensor(student.top_p_filter(z, p), decoding.top_p_filter(z, p), f"top_p_filter(logits {tuple(shape)}, {p})")


@pytest.mark.points(2)
def test_top_p_one_keeps_everything(student):
    """top_p_filter with p = 1 keeps every token, even a tail whose probability rounds to nothing"""
    z = torch.tensor([[40.0, 0.0, -3.0, -10.0], [1.0, 2.0, 3.0, 4.0], [0.0, -INF, 5.0, 1.0]])
    assert_tensor(student.top_p_filter(z, 1.0), z, "top_p_filter(logits, 1.0)")
    z = rand(3, 50, seed=9, scale=6.0)
    assert_tensor(student.top_p_filter(z, 1.0), z, "top_p_filter(logits (3, 50), 1.0)")


@pytest.mark.points(2)
@pytest.mark.parametrize("probs, p", [([0.4, 0.2, 0.2, 0.2], 0.5), ([0.3, 0.3, 0.2, 0.2], 0.25),
                                      ([0.25, 0.25, 0.25, 0.25], 0.6), ([0.5, 0.1, 0.1, 0.1, 0.1, 0.1], 0.55)],
                         ids=["tie-after-boundary", "tie-at-top", "all-tied", "tie-in-tail"])
def test_top_p_ties(student, probs, p):
    """top_p_filter keeps every token tied in probability with the last kept one"""
    z = torch.tensor(probs, dtype=torch.float64).log()[None].repeat(2, 1)
    z[1] = z[1].flip(0)
    assert_tensor(student.top_p_filter(z, p), decoding.top_p_filter(z, p), f"top_p_filter(tied probabilities {probs}, {p})")


# --- what every filter must do


@pytest.mark.points(1)
@pytest.mark.parametrize("name, arg", [("top_k_filter", 3), ("top_p_filter", 0.7)])
def test_filter_does_not_modify_input(student, name, arg):
    """top_k_filter and top_p_filter return a new tensor and leave their input unchanged"""
    z = rand(3, 10, seed=6)
    out = check_unchanged_input(student, name, z, arg)
    assert_tensor(out, getattr(decoding, name)(z, arg), f"{name}(logits, {arg})")


@pytest.mark.points(1)
@pytest.mark.parametrize("name, bad_values", [("apply_temperature", (0.0, -1.0)), ("top_k_filter", (0, -3, 2.5)),
                                              ("top_p_filter", (0.0, -0.1, 1.01))])
def test_rejects_bad_argument(student, name, bad_values):
    """a ValueError for a temperature <= 0, a k < 1 or not an integer, a p outside (0, 1]"""
    z = rand(2, 6, seed=7)
    for bad in bad_values:
        expect_value_error(getattr(student, name), z, bad, what=f"{name}(logits, {bad})")


# --- penalties


@pytest.mark.points(1)
def test_penalties_lecture_example(student):
    """apply_penalties reproduces the lecture's example: k = [1.6, 1.3, 1.3, 1.0]"""
    z = torch.tensor([0.8, 0.9, 0.1, 0.4])
    history = torch.tensor([0, 1, 0, 2, 0, 0])
    got = student.apply_penalties(z, history, 1.1, 1.2)
    assert_tensor(got, z / torch.tensor([1.6, 1.3, 1.3, 1.0]), "apply_penalties on the lecture's example")
    assert_tensor(student.apply_penalties(z, [0, 1, 0, 2, 0, 0], 1.1, 1.2), got,
                  "apply_penalties with the history as a list of ids")


@pytest.mark.points(2)
@pytest.mark.parametrize("f, r, temperature, dtype", [(1.3, 1.0, 1.0, torch.float32), (1.0, 1.8, 0.7, torch.float32),
                                                      (1.2, 1.5, 1.3, torch.float64)],
                         ids=["frequency", "presence-temperature", "both-float64"])
def test_penalties_batched_with_padding(student, f, r, temperature, dtype):
    """apply_penalties on a batch: one history per row, ids < 0 are padding, rows with negative logits shifted"""
    z = rand(4, 15, seed=12, dtype=dtype)
    z[1] = z[1].abs() + 0.1  # a row without negative logits: divided as it is
    history = torch.randint(-1, 15, (4, 12), generator=torch.Generator().manual_seed(13))
    history[2, :6] = -1
    want = decoding.apply_penalties(z, history, f, r, temperature)
    assert_tensor(student.apply_penalties(z, history, f, r, temperature), want,
                  f"apply_penalties(logits (4, 15), history (4, 12), {f}, {r}, temperature={temperature})")


@pytest.mark.points(1)
def test_penalties_shift_negative_rows(student):
    """apply_penalties shifts a row with a negative logit by its minimum before dividing (and only such rows)"""
    z = torch.tensor([[-2.0, 1.0, 0.5, 3.0], [0.2, 1.0, 0.5, 3.0], [-1.0, -2.0, -0.5, -3.0]])
    history = torch.tensor([[3, 3, 1], [3, 3, 1], [0, 2, 2]])
    assert_tensor(student.apply_penalties(z, history, 1.5, 1.2), decoding.apply_penalties(z, history, 1.5, 1.2),
                  "apply_penalties on rows with negative logits")
    assert_tensor(student.apply_penalties(z, history, 1.0, 1.0), decoding.apply_penalties(z, history, 1.0, 1.0),
                  "apply_penalties with penalties of 1 (only the shift of negative rows remains)")


@pytest.mark.points(1)
def test_penalties_empty_history(student):
    """apply_penalties with an empty history applies only the temperature (and the shift)"""
    z = rand(6, seed=14).abs()
    assert_tensor(student.apply_penalties(z, [], 1.5, 1.5, 2.0), z / 2, "apply_penalties(logits, [], 1.5, 1.5, 2.0)")
    z2 = rand(2, 6, seed=15)
    empty = torch.zeros(2, 0, dtype=torch.long)
    assert_tensor(student.apply_penalties(z2, empty, 1.5, 1.5), decoding.apply_penalties(z2, empty, 1.5, 1.5),
                  "apply_penalties(logits (2, 6), history (2, 0), 1.5, 1.5)")


@pytest.mark.points(1)
def test_penalties_do_not_modify_input(student):
    """apply_penalties leaves the logits it is given unchanged"""
    z = rand(2, 7, seed=16)
    history = torch.tensor([[1, 1, 2], [0, 6, 6]])
    out = check_unchanged_input(student, "apply_penalties", z, history, 1.4, 1.1)
    assert_tensor(out, decoding.apply_penalties(z, history, 1.4, 1.1), "apply_penalties(logits, history, 1.4, 1.1)")


@pytest.mark.points(1)
def test_penalties_reject_bad_arguments(student):
    """apply_penalties raises a ValueError for a penalty < 1 or a temperature <= 0"""
    z = rand(5, seed=17)
    for f, r, t in [(0.9, 1.0, 1.0), (1.0, 0.5, 1.0), (1.2, 1.2, 0.0)]:
        expect_value_error(student.apply_penalties, z, [1, 2], f, r, t,
                           what=f"apply_penalties(logits, history, {f}, {r}, temperature={t})")


# --- beam search


def check_beams(student, **kwargs):
    got = student.scenario("beam_hypotheses", **kwargs)
    want = scenarios.beam_hypotheses(REFERENCE, **kwargs)
    what = "beam_search's hypotheses"
    assert isinstance(got, list), f"{what}: expected a list"
    assert len(got) == len(want), f"{what}: expected {len(want)} hypotheses, got {len(got)}"
    for rank, (g, w) in enumerate(zip(got, want)):
        assert g["finished"] == w["finished"], f"{what}: hypothesis {rank} should {'' if w['finished'] else 'not '}" \
            "be finished (ended with the EOS)"
        assert g["tokens"] == w["tokens"], f"{what}: hypothesis {rank} has the wrong tokens"
        assert math.isclose(g["logprob"], w["logprob"], rel_tol=1e-4, abs_tol=1e-4), \
            f"{what}: hypothesis {rank} has a wrong logprob (off by {abs(g['logprob'] - w['logprob']):.3g})"
        assert math.isclose(g["score"], w["score"], rel_tol=1e-4, abs_tol=1e-4), \
            f"{what}: hypothesis {rank} has a wrong score (off by {abs(g['score'] - w['score']):.3g})"
    return got


@pytest.mark.points(2)
@pytest.mark.parametrize("seed, prompt, eos_id", [(0, [1, 2, 3], None), (1, [5], 7), (2, [0, 4], None)])
def test_beam_width_one_is_greedy(student, seed, prompt, eos_id):
    """beam_search with beam width 1 gives the greedy tokens"""
    got = check_beams(student, prompt=prompt, beam_width=1, max_new_tokens=6, eos_id=eos_id, seed=seed, vocab_size=11,
                      n_layer=1, n_embd=16)
    greedy = decoding.generate(scenarios.sharp_gpt(seed, vocab_size=11, n_layer=1, n_embd=16), prompt, 6,
                               eos_id=eos_id)[0]
    assert got[0]["tokens"] == greedy, "beam_search with beam width 1 does not give the greedy tokens"


@pytest.mark.points(2)
@pytest.mark.parametrize("V, L, seed", [(3, 3, 0), (4, 3, 1), (3, 4, 2)])
def test_beam_exhaustive(student, V, L, seed):
    """beam_search with beam width V**(L-1) and length_penalty 0 finds the most probable sequence (exhaustive)"""
    prompt = [0, 1]
    got = check_beams(student, prompt=prompt, beam_width=V ** (L - 1), max_new_tokens=L, length_penalty=0.0,
                      seed=seed, sharpness=5.0, vocab_size=V, n_layer=1, n_embd=16)
    model = scenarios.sharp_gpt(seed, 5.0, vocab_size=V, n_layer=1, n_embd=16)
    seqs = torch.tensor([prompt + list(s) for s in itertools.product(range(V), repeat=L)])
    with torch.no_grad():
        logprobs = torch.log_softmax(model(seqs)[0][:, len(prompt) - 1:-1].double(), -1)
    totals = logprobs.gather(-1, seqs[:, len(prompt):, None]).sum((1, 2))
    best = seqs[int(totals.argmax()), len(prompt):].tolist()
    assert got[0]["tokens"] == best, "beam_search's best hypothesis is not the most probable sequence"


@pytest.mark.points(3)
@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
@pytest.mark.parametrize("seed, sharpness, prompt, eos_id", [(0, 2.0, [1, 2], 2), (0, 4.0, [1, 2], 3),
                                                              (6, 2.0, [2, 2], 4)])
def test_beam_with_eos(student, seed, sharpness, prompt, eos_id, length_penalty):
    """beam_search keeps hypotheses that end with the EOS (tokens without it, logprob with it), stops early, ranks by score"""
    check_beams(student, prompt=prompt, beam_width=3, max_new_tokens=7, eos_id=eos_id, length_penalty=length_penalty,
                seed=seed, sharpness=sharpness, vocab_size=5, n_layer=1, n_embd=16)


@pytest.mark.points(2)
def test_beam_early_stop(student):
    """beam_search stops once beam_width hypotheses have finished and none alive scores better (not later)"""
    check_beams(student, prompt=[2, 1], beam_width=2, max_new_tokens=8, eos_id=2, length_penalty=1.0, seed=7,
                vocab_size=7, n_layer=1, n_embd=16)


@pytest.mark.points(1)
@pytest.mark.parametrize("beam_width, max_new_tokens", [(4, 5), (2, 1), (6, 3)])
def test_beam_larger_vocabulary(student, beam_width, max_new_tokens):
    """beam_search on a 61-token model, without an end token"""
    check_beams(student, prompt=[5, 9, 13], beam_width=beam_width, max_new_tokens=max_new_tokens, seed=4,
                sharpness=3.0)


@pytest.mark.points(1)
def test_beam_wider_than_vocabulary(student):
    """beam_search with a beam wider than the vocabulary (fewer candidates than beams at the first step)"""
    check_beams(student, prompt=[1], beam_width=5, max_new_tokens=3, seed=5, sharpness=4.0, vocab_size=3, n_layer=1,
                n_embd=16)

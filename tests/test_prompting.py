"""gpt_lab.prompting: few-shot prompt format and accuracy as a function of the number of shots."""
import numpy as np
import pytest
import torch

from gpt_lab.model import GPT, GPTConfig
from gpt_lab.prompting import (CODE_NAME_FORMAT, accuracy_vs_shots, binomial_interval, complete, copy_task_batches,
                               few_shot_prompt, induction_scores, repeat_loss)
from gpt_lab.data import repeated_tokens
from gpt_lab.sft import SYSTEM_PROMPT, SFTExample
from gpt_lab.tokenizer import CompactTokenizer, get_tokenizer
from gpt_lab.train import TrainConfig, lm_batches, train

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NEXT_DAY = [(d, DAYS[(i + 1) % 7]) for i, d in enumerate(DAYS)]


def test_few_shot_prompt_format():
    assert few_shot_prompt(NEXT_DAY[:2], "Friday") == "Monday -> Tuesday\nTuesday -> Wednesday\nFriday ->"
    assert few_shot_prompt([], "Friday") == "Friday ->"
    assert few_shot_prompt(NEXT_DAY[:1], "Friday", instruction="Next day:") == "Next day:\nMonday -> Tuesday\nFriday ->"
    code = few_shot_prompt([("def add(a, b):\n    return a + b", "add")], "def neg(x):\n    return -x",
                           **CODE_NAME_FORMAT)
    assert code == "def add(a, b):\n    return a + b\n# name: add\n\ndef neg(x):\n    return -x\n# name:"


@pytest.fixture(scope="module")
def days_model():
    """A tiny model trained (seconds) on lines 'day next-day' (a bigram it learns fast): it knows the mapping."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    text = "\n".join(f"{a} {b}" for a, b in (NEXT_DAY[i] for i in rng.integers(0, 7, 3000)))
    tok = CompactTokenizer(get_tokenizer().encode(text))
    ids = np.array(tok.encode(text), dtype=np.int64)
    model = GPT(GPTConfig(vocab_size=tok.n_vocab, block_size=64, n_layer=2, n_head=2, n_embd=48, dropout=0.0))
    batches = lm_batches(ids[:-500], ids[-500:], batch_size=16, block_size=32, seed=0)
    train(model, batches, TrainConfig(max_steps=120, lr=1e-2, warmup_steps=10, eval_interval=0, progress=False))
    return model.eval(), tok


def test_complete_cuts_one_answer(days_model):
    model, tok = days_model
    prompts = [few_shot_prompt(NEXT_DAY[:2], d, answer_prefix="") for d in ("Friday", "Sunday", "Monday")]
    assert complete(model, tok, prompts, max_new_tokens=6, batch_size=2) == ["Saturday", "Monday", "Tuesday"]


def test_accuracy_vs_shots_counts_exact_matches(days_model):
    model, tok = days_model
    acc = accuracy_vs_shots(model, tok, NEXT_DAY, shots=(0, 1, 2, 4), answer_prefix="", separator="\n",
                            max_new_tokens=6)
    assert acc == {0: 1.0, 1: 1.0, 2: 1.0, 4: 1.0}
    # references that are wrong for half the queries: accuracy counts exactly those
    wrong = [(d, n if i % 2 == 0 else "Never") for i, (d, n) in enumerate(NEXT_DAY)]
    acc = accuracy_vs_shots(model, tok, wrong, shots=(2,), shot_examples=NEXT_DAY, answer_prefix="",
                            separator="\n", max_new_tokens=6)
    assert acc == {2: pytest.approx(4 / 7)}
    assert accuracy_vs_shots(model, tok, NEXT_DAY, shots=(1,), n_eval=3, answer_prefix="", separator="\n",
                             max_new_tokens=6) == {1: 1.0}


def test_accuracy_vs_shots_reads_sft_examples_and_checks_sizes(days_model):
    model, tok = days_model
    examples = [SFTExample(SYSTEM_PROMPT, "", n, "next-day", "days", d) for d, n in NEXT_DAY]
    assert accuracy_vs_shots(model, tok, examples, shots=(1,), answer_prefix="", separator="\n",
                             max_new_tokens=6) == {1: 1.0}
    with pytest.raises(ValueError, match="at least 8"):
        accuracy_vs_shots(model, tok, NEXT_DAY, shots=(8,))
    with pytest.raises(ValueError, match="block_size"):
        accuracy_vs_shots(model, tok, NEXT_DAY, shots=(2,), instruction="word " * 60, max_new_tokens=6)


class _Copier(torch.nn.Module):
    """A perfect induction head: predicts the token that followed the previous occurrence of the
    current token (uniform when there is none)."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.config = GPTConfig(vocab_size=vocab_size, block_size=128)
        self.dummy = torch.nn.Parameter(torch.zeros(()))

    def forward(self, idx):
        B, T = idx.shape
        logits = torch.zeros(B, T, self.config.vocab_size)
        for b in range(B):
            for t in range(T):
                earlier = (idx[b, :t] == idx[b, t]).nonzero().flatten()
                if len(earlier):
                    logits[b, t, idx[b, earlier[-1] + 1]] = 30.0
        return logits, None


def test_repeat_loss_separates_a_copier_from_a_random_model():
    V = 5000  # few chance repeats inside the random half, where the copier guesses wrong
    first, repeat = repeat_loss(_Copier(V), V, length=40)
    assert first > np.log(V) - 0.2                       # no better than chance on fresh random tokens
    assert repeat < 1.0                                  # the copy is predicted
    torch.manual_seed(0)
    random_model = GPT(GPTConfig(vocab_size=V, block_size=128, n_layer=1, n_head=2, n_embd=16)).eval()
    first, repeat = repeat_loss(random_model, V, length=40)
    assert abs(first - repeat) < 0.1 and first > 5.0
    with pytest.raises(ValueError, match="block_size"):
        repeat_loss(random_model, V, length=65)


def test_repeated_tokens_repeat_with_a_fixed_or_a_random_period():
    g = torch.Generator().manual_seed(0)
    fixed = repeated_tokens(100, 4, 10, g)
    assert fixed.shape == (4, 20) and torch.equal(fixed[:, :10], fixed[:, 10:])
    rows = repeated_tokens(1000, 64, 10, torch.Generator().manual_seed(0), min_period=3)
    assert rows.shape == (64, 20)
    # each row's period: the smallest shift that maps the row onto itself
    periods = [next(d for d in range(1, 21) if torch.equal(row[d:], row[:-d])) for row in rows]
    assert min(periods) >= 3 and max(periods) <= 10 and len(set(periods)) >= 6
    with pytest.raises(ValueError, match="min_period"):
        repeated_tokens(100, 4, 10, g, min_period=11)


def test_a_two_layer_gpt_learns_to_copy_from_a_fixed_distance_back():
    """The course's GPT and loop learn the fixed-period copy task: the repeat becomes predictable while
    fresh random tokens stay at chance. What it learned is positional ("copy from 16 tokens back"),
    not an induction head: a repeat at another distance is not copied."""
    torch.manual_seed(0)
    V, L = 128, 16
    model = GPT(GPTConfig(vocab_size=V, block_size=2 * L, n_layer=2, n_head=4, n_embd=64))
    before = repeat_loss(model.eval(), V, length=L)
    train(model, copy_task_batches(V, batch_size=32, length=L), TrainConfig(max_steps=300, lr=3e-3, warmup_steps=20,
                                                                              eval_interval=0, progress=False))
    first, repeat = repeat_loss(model.eval(), V, length=L, seed=1)
    assert abs(before[0] - before[1]) < 0.3                   # untrained: the repeat is as hard as the first pass
    assert first > np.log(V) - 0.5                            # fresh random tokens stay unpredictable
    assert repeat < 0.5                                       # the repeat is copied
    _, other_distance = repeat_loss(model, V, length=L // 2, seed=1)
    assert other_distance > np.log(V) - 0.5                   # ...but only from where the copy was in training


def test_with_smeared_keys_a_gpt_learns_an_induction_head():
    """With key_shift and random periods (only copying what followed the earlier occurrence helps),
    a two-layer GPT learns to copy at any distance: the repeat is predicted at the trained length and
    at half of it, and one head attends to the token after the earlier occurrence (induction score
    far above uniform); before training, every head is near uniform."""
    torch.manual_seed(0)
    V, L = 128, 16
    model = GPT(GPTConfig(vocab_size=V, block_size=2 * L, n_layer=2, n_head=4, n_embd=64, key_shift=True))
    assert float(induction_scores(model.eval(), V, L).max()) < 0.15
    train(model, copy_task_batches(V, batch_size=32, length=L, min_period=4),
          TrainConfig(max_steps=400, lr=3e-3, warmup_steps=20, eval_interval=0, progress=False))
    model.eval()
    for length in (L, L // 2):
        first, repeat = repeat_loss(model, V, length=length, seed=1)
        assert first > np.log(V) - 0.5 and repeat < 0.1 * first, (length, first, repeat)
    assert float(induction_scores(model, V, L).max()) > 0.5


def test_binomial_interval_solves_the_wilson_equation():
    """The Wilson bounds p are the two roots of n (p_hat - p)^2 = z^2 p (1 - p)."""
    z = 1.96
    for k, n in ((0, 200), (37, 200), (200, 200), (3, 10)):
        low, high = binomial_interval(k, n)
        assert 0.0 <= low <= k / n <= high <= 1.0
        for p in (low, high):
            if 0.0 < p < 1.0 or (p == 0.0 and k == 0) or (p == 1.0 and k == n):
                assert n * (k / n - p) ** 2 == pytest.approx(z * z * p * (1 - p), abs=1e-9)
    assert binomial_interval(100, 200) == pytest.approx((0.4314, 0.5686), abs=1e-4)
    for n in (7, 40, 394, 1000):  # exactly 0 / 1 at the ends: error bars p - low are never negative
        assert binomial_interval(0, n)[0] == 0.0 and binomial_interval(n, n)[1] == 1.0
    with pytest.raises(ValueError):
        binomial_interval(3, 2)

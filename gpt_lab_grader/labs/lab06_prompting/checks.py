"""Hidden checks of lab 6 (prompting), against gpt_lab.prompting on a small model trained on a pattern.

Run by `gpt_lab_grader.checks.run_checks("lab06-prompting", notebook)`; the student's code is
reached only through the `student` fixture (gpt_lab_grader/labs/adapters.py).

Points per idea: few_shot_prompt 5, complete 9, accuracy_vs_shots 15. The accuracy_vs_shots checks run
the student's function with the reference few_shot_prompt and complete (see scenarios.py), so a mistake
in either costs its own points only.
"""
import random

import numpy as np
import pytest
import torch
from filelock import FileLock

from gpt_lab.data import cache_dir
from gpt_lab_grader.labs.adapters import expect_value_error
from gpt_lab_grader.labs.lab06_prompting import scenarios
from gpt_lab.model import GPT, GPTConfig
from gpt_lab.prompting import few_shot_prompt
from gpt_lab.tokenizer import CompactTokenizer, get_tokenizer
from gpt_lab.train import TrainConfig, lm_batches, train

LAB = "lab06-prompting"
REFERENCE = scenarios.reference_lab06()
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
NEXT_DAY = [(d, DAYS[(i + 1) % 7]) for i, d in enumerate(DAYS)]


def train_days_model() -> dict:
    """A tiny model trained (seconds, one thread) on 'day -> next day' lines: weights, config, tokenizer ids."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        rng = np.random.default_rng(0)
        text = "\n".join(f"{a} -> {b}" for a, b in (NEXT_DAY[i] for i in rng.integers(0, 7, 3000)))
        tok = CompactTokenizer(get_tokenizer().encode(text))
        ids = np.array(tok.encode(text), dtype=np.int64)
        config = GPTConfig(vocab_size=tok.n_vocab, block_size=48, n_layer=2, n_head=2, n_embd=48, dropout=0.0)
        model = GPT(config)
        batches = lm_batches(ids[:-400], ids[-400:], batch_size=16, block_size=32, seed=0)
        train(model, batches, TrainConfig(max_steps=150, lr=3e-3, warmup_steps=10, eval_interval=0, progress=False))
    finally:
        torch.set_num_threads(threads)
    return {"state": {k: v.detach().clone() for k, v in model.state_dict().items()}, "config": config.to_dict(),
            "kept_ids": list(tok.kept)}


@pytest.fixture(scope="module")
def days_model() -> dict:
    """The days model, trained once and kept in the cache directory (checks of solutions/ and labs/ share it)."""
    path = cache_dir() / "lab-checks" / "lab06-days-model-v1.pt"
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path) + ".lock"):
        if not path.exists():
            torch.save(train_days_model(), path)
        return torch.load(path, weights_only=True)


# --- few_shot_prompt


@pytest.mark.points(1)
@pytest.mark.parametrize("n_examples, kwargs", [
    (2, {}), (0, {}), (1, {"instruction": "The next day:"}), (3, {"answer_prefix": " =", "separator": " | "}),
    (2, {"instruction": "# names", "answer_prefix": "\n# name:", "separator": "\n\n"}),
], ids=["default", "no-examples", "instruction", "prefix-separator", "code-format"])
def test_few_shot_prompt(student, n_examples, kwargs):
    """few_shot_prompt writes [instruction,] "{input}{prefix} {output}" blocks and "{query}{prefix}", joined by separator"""
    examples = [("def add(a, b):\n    return a + b", "add"), ("Tuesday", "Wednesday"), ("é ü", "ß")][:n_examples]
    got = student.few_shot_prompt(examples, "def neg(x):\n    return -x", **kwargs)
    assert type(got) is str, f"few_shot_prompt should return a str, got {type(got).__name__}"
    assert got == few_shot_prompt(examples, "def neg(x):\n    return -x", **kwargs), \
        f"few_shot_prompt({n_examples} examples, query, {kwargs}) is not the expected prompt"


# --- complete


def check_completions(student, days_model, prompts, max_new_tokens=16, batch_size=16):
    kwargs = dict(days_model, prompts=prompts, max_new_tokens=max_new_tokens, batch_size=batch_size)
    got = student.scenario("completions", **kwargs)
    want = scenarios.completions(REFERENCE, **kwargs)
    assert isinstance(got, list) and all(type(a) is str for a in got), "complete should return a list of str"
    assert len(got) == len(want), f"complete should return {len(want)} answers (one per prompt), got {len(got)}"
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"complete's answer {i} is wrong (greedy continuation, first line, stripped)"


@pytest.mark.points(2)
@pytest.mark.parametrize("batch_size", [1, 2, 16])
def test_complete(student, days_model, batch_size):
    """complete gives each prompt's greedy continuation up to the end token, first line only, stripped"""
    prompts = [few_shot_prompt(NEXT_DAY[:2], "Friday"), "Sunday ->", few_shot_prompt(NEXT_DAY[3:4], "Monday"),
               "Monday -> Tuesday\nWednesday", "Thursday -> Friday\n"]
    check_completions(student, days_model, prompts, max_new_tokens=6, batch_size=batch_size)


@pytest.mark.points(1)
def test_complete_several_lines(student, days_model):
    """complete keeps only the first line of a continuation that runs over several lines"""
    check_completions(student, days_model, ["Monday", "Friday -> Saturday\nSaturday"], max_new_tokens=12)


@pytest.mark.points(1)
def test_complete_near_the_end_of_the_context(student, days_model):
    """complete generates only as many tokens as fit in the model's context"""
    tok = CompactTokenizer(days_model["kept_ids"])
    lines = [f"{a} -> {b}" for a, b in NEXT_DAY * 3]
    prompt = "\n".join(lines)
    while len(tok.encode(prompt + "\nMonday ->")) > days_model["config"]["block_size"] - 1:
        lines.pop(0)
        prompt = "\n".join(lines)
    check_completions(student, days_model, [prompt + "\nMonday ->"], max_new_tokens=10)


def scripted_model() -> dict:
    """A scripted model (`bigram_gpt`, the next token set by the last one) that writes the end token:
    " ->" -> " Tuesday" -> end -> " Sunday" -> end -> " Sunday" ...; " Wednesday" -> " Thursday" -> "\n" ->
    " Friday" -> end (a newline before the end token); every other token -> end."""
    tok = CompactTokenizer(get_tokenizer().encode("Monday -> Tuesday Wednesday Thursday Friday Sunday\n"))

    def one(text):
        ids = tok.encode(text)
        assert len(ids) == 1, f"internal: {text!r} should be one token"
        return ids[0]

    eot = tok.eot_token
    chain = [(" ->", " Tuesday"), (" Wednesday", " Thursday"), (" Thursday", "\n"), ("\n", " Friday")]
    successors = [(one(a), one(b)) for a, b in chain] + [(one(" Tuesday"), eot), (eot, one(" Sunday"))]
    return dict(kept_ids=list(tok.kept), successors=successors, default=eot, block_size=24)


@pytest.mark.points(1)
def test_complete_stops_at_the_end_token(student):
    """complete stops each answer at the end token (generate's eos_id), on a model that writes it and goes on"""
    prompts = ["Monday ->", "Monday -> Tuesday\nWednesday -> Thursday", "Thursday -> Friday", "Monday -> Wednesday",
               "Sunday -> Monday\nTuesday ->"]
    kwargs = dict(scripted_model(), prompts=prompts, max_new_tokens=6, batch_size=2)
    got = student.scenario("scripted_completions", **kwargs)
    want = scenarios.scripted_completions(REFERENCE, **kwargs)
    assert want == ["Tuesday", "", "", "Thursday", "Tuesday"], "internal: the scripted model's answers changed"
    assert isinstance(got, list) and all(type(a) is str for a in got), "complete should return a list of str"
    assert len(got) == len(want), f"complete should return {len(want)} answers (one per prompt), got {len(got)}"
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w and "<|endoftext|>" in g:
            raise AssertionError(f"complete's answer {i} goes on past the end token: stop there (eos_id)")
        assert g == w, f"complete's answer {i} is wrong (greedy continuation up to the end token, first line, stripped)"


# --- accuracy_vs_shots


def check_accuracy(student, days_model, task, **kwargs):
    kwargs = dict(days_model, task_examples=task, **kwargs)
    got = student.scenario("shot_accuracy", **kwargs)
    want = scenarios.shot_accuracy(REFERENCE, **kwargs)
    assert isinstance(got, dict), f"accuracy_vs_shots should return a dict {{shots: accuracy}}, got {type(got).__name__}"
    assert sorted(got) == sorted(want), f"accuracy_vs_shots should have the keys {sorted(want)}, got {sorted(got)}"
    for k in want:
        assert type(got[k]) is float, f"the accuracy with {k} shots should be a float, got {type(got[k]).__name__}"
        assert abs(got[k] - want[k]) < 1e-9, f"the accuracy with {k} shots is wrong"


WRONG = [(d, "Sunday" if i % 2 else n) for i, (d, n) in enumerate(NEXT_DAY)]  # half the answers are wrong


@pytest.mark.points(2)
@pytest.mark.parametrize("kwargs", [
    dict(shots=(0, 1, 2)),
    dict(shots=(2, 4), n_eval=4, seed=5),
    dict(shots=(1,), batch_size=2, max_new_tokens=3),
], ids=["shots-0-1-2", "n-eval-seed", "batch-size"])
def test_accuracy_vs_shots(student, days_model, kwargs):
    """accuracy_vs_shots counts exact matches of the greedy answers, shots drawn as specified"""
    check_accuracy(student, days_model, WRONG, answer_prefix=" ->", separator="\n", **kwargs)


@pytest.mark.points(1)
def test_accuracy_with_separate_shots_and_instruction(student, days_model):
    """accuracy_vs_shots with shot_examples (the pool of shots) and an instruction"""
    check_accuracy(student, days_model, WRONG[:5], shot_examples=NEXT_DAY, shots=(0, 3), instruction="Days:",
                   answer_prefix=" ->", separator="\n", seed=2)


@pytest.mark.points(1)
def test_accuracy_reads_sft_examples(student, days_model):
    """accuracy_vs_shots reads examples with .code and .answer (SFTExample) as (code, answer)"""
    check_accuracy(student, days_model, NEXT_DAY, as_sft_examples=True, shots=(0, 2), answer_prefix=" ->",
                   separator="\n")


@pytest.mark.points(2)
@pytest.mark.parametrize("seed, shots, n_eval, form", [
    (0, (0, 1, 3), None, dict(answer_prefix=" ->", separator="\n")),
    # not few_shot_prompt's defaults: the prefix and separator must be passed on; outputs with spaces
    # around them: an answer is right when it equals the output stripped
    (4, (2, 4), 5, dict(answer_prefix=":", separator="\n\n", padded=True)),
], ids=["0-shots0-None", "4-shots1-5"])
def test_accuracy_prompts(student, days_model, seed, shots, n_eval, form):
    """accuracy_vs_shots asks your complete() with nested shots drawn as specified, never the query's input or output"""
    pool = NEXT_DAY + [(d, "Sunday") for d in DAYS[:4]] + [("Someday", d) for d in DAYS[:3]]
    form = dict(form)
    task = [(x, f" {y} ") for x, y in WRONG] if form.pop("padded", False) else WRONG
    kwargs = dict(days_model, task_examples=task, shot_examples=pool, shots=shots, n_eval=n_eval, seed=seed,
                  max_new_tokens=5, **form)
    got = student.scenario("shot_prompts", **kwargs)
    want = scenarios.shot_prompts(REFERENCE, **kwargs)
    assert got["prompts"], "accuracy_vs_shots should get its answers from your complete()"
    assert len(got["prompts"]) == len(want["prompts"]), \
        f"accuracy_vs_shots should ask {len(want['prompts'])} prompts in all (queries x shot counts), asked {len(got['prompts'])}"
    assert got["prompts"] == want["prompts"], \
        "accuracy_vs_shots builds other prompts than expected: check how the shots are drawn and nested"
    assert got["max_new_tokens"] == want["max_new_tokens"], "accuracy_vs_shots should pass max_new_tokens to complete()"
    assert got["accuracy"] == want["accuracy"], "with these answers the accuracy is wrong"


@pytest.mark.points(1)
def test_accuracy_rejects_no_query(student, days_model):
    """accuracy_vs_shots raises a ValueError when there is no query to evaluate"""
    expect_value_error(lambda: student.scenario("shot_accuracy", **days_model, task_examples=[], shots=(0, 1),
                                                answer_prefix=" ->", separator="\n"),
                       what="accuracy_vs_shots with no task examples")


def longest_prompt(days_model, task, shots, n_eval, seed, **form) -> int:
    """Tokens of the longest k-shot prompt of accuracy_vs_shots (shots drawn by the notebook's rules)."""
    tok = CompactTokenizer(days_model["kept_ids"])
    queries = task[:n_eval]
    rng = random.Random(seed)
    drawn = [rng.sample([p for p in task if p[0] != x and p[1] != y], max(shots)) for x, y in queries]
    return max(len(tok.encode(few_shot_prompt(d[:k], x, **form))) for k in shots for (x, _), d in zip(queries, drawn))


@pytest.mark.points(1)
@pytest.mark.parametrize("over", [1, 0], ids=["one-token-too-many", "just-fits"])
def test_accuracy_room_for_the_answer(student, days_model, over):
    """accuracy_vs_shots raises a ValueError when its longest prompt (L tokens) leaves no room for the answer,
    L + max_new_tokens - 1 > block_size, and only then"""
    form = dict(answer_prefix=" ->", separator="\n")
    shots, n_eval, seed = (0, 4), 3, 1
    room = days_model["config"]["block_size"] + 1 - longest_prompt(days_model, NEXT_DAY, shots, n_eval, seed, **form)
    kwargs = dict(days_model, task_examples=NEXT_DAY, shots=shots, n_eval=n_eval, seed=seed,
                  max_new_tokens=room + over, **form)
    if over:
        with pytest.raises(ValueError):
            scenarios.shot_accuracy(REFERENCE, **kwargs)  # internal: the rule as gpt_lab applies it
        expect_value_error(lambda: student.scenario("shot_accuracy", **kwargs),
                           what=f"accuracy_vs_shots with max_new_tokens {room + over}, one more than fits")
    else:
        check_accuracy(student, days_model, NEXT_DAY, shots=shots, n_eval=n_eval, seed=seed, max_new_tokens=room,
                       **form)

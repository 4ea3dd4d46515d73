"""Labs 6 and 7 state their rules exactly: each rule the notebook states is checked against gpt_lab's reference.

Every test quotes the rule's key phrase from the solution notebook's instructions (`stated`: the phrase must
be there, so the statement cannot drift from what is tested), then checks that gpt_lab.prompting or gpt_lab.sft,
the references the hidden checks compare with, behave that way. `gpt_lab.decoding.generate` is replaced by a
recorder where the rule is about what `complete` asks of it (sorting, batches, the token budget) or does with its
tokens (the cut at the newline, the order of the answers).
"""
from __future__ import annotations

import json
import random
from types import MappingProxyType, SimpleNamespace

import pytest
import torch

import gpt_lab.decoding
import gpt_lab.prompting
from gpt_lab import sft
from gpt_lab.decoding import generate
from gpt_lab.loss import IGNORE_INDEX, shift_labels
from gpt_lab.prompting import accuracy_vs_shots, complete, few_shot_prompt
from gpt_lab.tokenizer import ENDOFTEXT, get_tokenizer
from gpt_lab_grader.labs.scenarios import tiny_gpt
from grader import solution

TOK = get_tokenizer()


def instructions(lab: str, cell_id: str) -> str:
    """The markdown of one instruction cell of the lab's solution notebook, whitespace normalised."""
    cells = [c for c in json.loads(solution(lab).read_text())["cells"] if c.get("id") == cell_id]
    assert len(cells) == 1 and cells[0]["cell_type"] == "markdown", f"{lab} has no instruction cell {cell_id!r}"
    return " ".join("".join(cells[0]["source"]).split())


def stated(lab: str, cell_id: str, *phrases: str) -> None:
    """Each phrase (whitespace normalised) is part of the instructions of `cell_id`."""
    text = instructions(lab, cell_id)
    for phrase in phrases:
        assert " ".join(phrase.split()) in text, f"{lab}, cell {cell_id}: the rule {phrase!r} is no longer stated"


class Recorder:
    """Stands in for gpt_lab.decoding.generate: records each call, answers prompt p with `reply(p)`'s tokens,
    cut to the n new tokens asked for (as a model that never writes the end token would)."""

    def __init__(self, reply):
        self.reply, self.calls = reply, []

    def __call__(self, model, prompt_ids, max_new_tokens, strategy="greedy", eos_id=None, **kwargs):
        prompts = [list(p) for p in prompt_ids]
        self.calls.append({"prompts": prompts, "n": max_new_tokens, "strategy": strategy, "eos_id": eos_id,
                           "kwargs": kwargs})
        return [TOK.encode(self.reply(p))[:max_new_tokens] for p in prompts]


def stub_model(block_size: int):
    return SimpleNamespace(config=SimpleNamespace(block_size=block_size))


# --------------------------------------------------------------------------- lab 6: few_shot_prompt

LAB6 = "lab06-prompting"


def test_lab06_few_shot_prompt_blocks():
    stated(LAB6, "prompt-text", 'each becomes the block `f"{input}{answer_prefix} {output}"`',
           'the query becomes the block `f"{query}{answer_prefix}"`, **with no trailing space**',
           "a non-empty `instruction` is the first block", "the blocks are joined by `separator`",
           '`few_shot_prompt([("Monday", "Tuesday"), ("Tuesday", "Wednesday")], "Friday")` is '
           '`"Monday -> Tuesday\\nTuesday -> Wednesday\\nFriday ->"`', "With no examples it is just the query.")
    assert few_shot_prompt([("Monday", "Tuesday"), ("Tuesday", "Wednesday")], "Friday") == \
        "Monday -> Tuesday\nTuesday -> Wednesday\nFriday ->"
    assert few_shot_prompt([], "Friday") == "Friday ->"
    examples = [("def f(x):\n    return x", "f"), ("a b", " c ")]
    for instruction, prefix, separator in [("", " ->", "\n"), ("Name it:", "\n# name:", "\n\n"), ("I", " =", " | ")]:
        blocks = ([instruction] if instruction else []) + [f"{x}{prefix} {y}" for x, y in examples] + [f"q{prefix}"]
        got = few_shot_prompt(examples, "q", instruction, prefix, separator)
        assert got == separator.join(blocks) and not got.endswith(" ")


# --------------------------------------------------------------------------- lab 6: complete


def test_lab06_complete_sorts_by_length_and_batches_in_that_order(monkeypatch):
    stated(LAB6, "complete-text", "**sort** the prompts by their number of tokens, shortest first, prompts of "
           "equal length keeping their order (`sorted(range(len(ids)), key=lambda i: len(ids[i]))`), and take "
           "them `batch_size` at a time in that order")
    record = Recorder(lambda p: " x")
    monkeypatch.setattr(gpt_lab.decoding, "generate", record)
    prompts = ["a b c d e f", "a", "a b c", "b", "a b c d", "c d e", "x"]  # 6, 1, 3, 1, 4, 3, 1 tokens
    ids = [TOK.encode(p) for p in prompts]
    for batch_size in (1, 2, 3, 16):
        record.calls.clear()
        complete(stub_model(64), TOK, prompts, max_new_tokens=4, batch_size=batch_size)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        assert order == [1, 3, 6, 2, 5, 4, 0]
        want = [[ids[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]
        assert [c["prompts"] for c in record.calls] == want
        assert all(c["strategy"] == "greedy" and c["eos_id"] == TOK.eot_token for c in record.calls)


def test_lab06_complete_token_budget_of_the_longest_prompt_of_the_batch(monkeypatch):
    stated(LAB6, "complete-text", "`n = min(max_new_tokens, block_size + 1 - L)`",
           "`L` is the number of tokens of the **longest prompt of the batch**")
    record = Recorder(lambda p: " one two three four five six seven eight nine ten")
    monkeypatch.setattr(gpt_lab.decoding, "generate", record)
    prompts = [" ".join(["w"] * n) for n in (3, 9, 5, 10, 1, 8)]
    lengths = [len(TOK.encode(p)) for p in prompts]
    block = 12
    for max_new, batch_size in [(6, 2), (2, 2), (16, 1), (5, 6)]:
        record.calls.clear()
        answers = complete(stub_model(block), TOK, prompts, max_new_tokens=max_new, batch_size=batch_size)
        order = sorted(range(len(prompts)), key=lambda i: lengths[i])
        for s, call in zip(range(0, len(order), batch_size), record.calls, strict=True):
            L = max(lengths[i] for i in order[s:s + batch_size])
            assert call["n"] == min(max_new, block + 1 - L)
        budget = {i: c["n"] for s, c in zip(range(0, len(order), batch_size), record.calls)
                  for i in order[s:s + batch_size]}
        words = "one two three four five six seven eight nine ten".split()
        assert answers == [" ".join(words[:budget[i]]) for i in range(len(prompts))]


def test_lab06_complete_room_in_the_context_is_what_generate_allows():
    stated(LAB6, "complete-text", "a prompt of `L` tokens leaves room for only `block_size + 1 - L` new tokens",
           "raises a `ValueError` for a prompt longer than `block_size`")
    model = tiny_gpt(0, vocab_size=TOK.n_vocab, block_size=16, n_embd=16)
    for L in (1, 9, 16):
        prompt = [11] * L
        assert len(generate(model, [prompt], 16 + 1 - L)[0]) == 16 + 1 - L
        with pytest.raises(ValueError):
            generate(model, [prompt], 16 + 2 - L)
    with pytest.raises(ValueError):
        complete(model, TOK, ["w " * 17], max_new_tokens=4)


def test_lab06_complete_generate_stops_before_the_end_token():
    stated(LAB6, "complete-text", "stopping at the end token (`tokenizer.eot_token`)",
           "returns the new tokens of each, without the end token")
    model = tiny_gpt(1, vocab_size=TOK.n_vocab, block_size=16, n_embd=16)
    first = generate(model, [[11, 12, 13]], 3)[0]
    assert generate(model, [[11, 12, 13]], 3, eos_id=first[1])[0] == first[:first.index(first[1])]


def test_lab06_complete_cuts_at_the_first_newline_and_strips(monkeypatch):
    stated(LAB6, "complete-text", "keep only the text **before the first newline** (one answer is one line), "
           "and strip the spaces around it")
    replies = {"a": "  Tuesday  \nWednesday -> Thursday", "b": "\n Tuesday", "c": " x y ", "d": " \tz\n\n"}
    monkeypatch.setattr(gpt_lab.decoding, "generate", Recorder(lambda p: replies[TOK.decode(p)]))
    assert complete(stub_model(64), TOK, ["a", "b", "c", "d"], max_new_tokens=20) == ["Tuesday", "", "x y", "z"]


def test_lab06_complete_answers_in_the_order_of_the_prompts(monkeypatch):
    stated(LAB6, "complete-text", "return the answers in the order of `prompts`, not in the order of the batches")
    monkeypatch.setattr(gpt_lab.decoding, "generate", Recorder(lambda p: f" answer to {TOK.decode(p)!r}"))
    prompts = ["a b c d e", "a", "a b c", "zz", "a b"]
    for batch_size in (1, 2, 16):
        answers = complete(stub_model(64), TOK, prompts, max_new_tokens=20, batch_size=batch_size)
        assert answers == [f"answer to {p!r}" for p in prompts]


def spec_complete(model, tokenizer, prompts, max_new_tokens, batch_size):
    """complete written from the notebook's rules, word for word."""
    ids = [tokenizer.encode(p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        rows = order[s:s + batch_size]
        n = min(max_new_tokens, model.config.block_size + 1 - max(len(ids[i]) for i in rows))
        for i, new in zip(rows, generate(model, [ids[i] for i in rows], n, strategy="greedy",
                                         eos_id=tokenizer.eot_token)):
            out[i] = tokenizer.decode(new).split("\n")[0].strip()
    return out


def test_lab06_complete_on_a_model_near_the_end_of_its_context(one_thread):
    """All the rules together on a real (random) model whose budget binds: the reference is the stated rules."""
    model = tiny_gpt(2, vocab_size=TOK.n_vocab, block_size=24, n_embd=16)
    prompts = [" ".join(["w"] * n) for n in (20, 3, 22, 7, 18, 1, 23)]
    for max_new, batch_size in [(8, 2), (3, 3), (8, 16), (1, 1)]:
        assert complete(model, TOK, prompts, max_new, batch_size) == spec_complete(model, TOK, prompts, max_new,
                                                                                   batch_size)


# --------------------------------------------------------------------------- lab 6: accuracy_vs_shots


class CompleteRecorder:
    """Stands in for gpt_lab.prompting.complete inside accuracy_vs_shots: records, answers `answer`."""

    def __init__(self, answer="Tuesday"):
        self.answer, self.calls = answer, []

    def __call__(self, model, tokenizer, prompts, max_new_tokens=16, batch_size=16):
        self.calls.append((list(prompts), max_new_tokens, batch_size))
        return [self.answer] * len(prompts)


DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
TASK = [(d, DAYS[(i + 1) % 7]) for i, d in enumerate(DAYS)]


def spec_prompts(task, pool, shots, n_eval, seed, instruction, prefix, separator):
    """The prompts of every k, from the notebook's rules, word for word."""
    queries = task[:n_eval]
    rng = random.Random(seed)
    drawn = [rng.sample([p for p in pool if p[0] != x and p[1] != y], max(shots)) for x, y in queries]
    return {k: [few_shot_prompt(d[:k], x, instruction, prefix, separator) for (x, _), d in zip(queries, drawn)]
            for k in shots}


def test_lab06_accuracy_shots_drawn_nested_and_never_the_answer(monkeypatch):
    stated(LAB6, "acc-text", "the queries are the first `n_eval` task examples (all of them when `n_eval` is None)",
           "Draw them once per query, in query order, with one `rng = random.Random(seed)`: "
           "`rng.sample(candidates, max(shots))`, where the candidates are the pool's pairs whose input **and** "
           "output both differ from the query's",
           "the prompt with `k` shots uses the **first `k`** of the query's drawn shots",
           "the answers come from your `complete(model, tokenizer, prompts, max_new_tokens, batch_size)`")
    pool = TASK + [(d, "Tuesday") for d in DAYS[:3]] + [("Monday", "x"), ("Someday", "y"), ("Otherday", "z")]
    for shots, n_eval, seed, pool_arg in [((0, 1, 3), None, 0, None), ((2, 4), 3, 5, pool), ((1,), 5, 1, pool)]:
        record = CompleteRecorder()
        monkeypatch.setattr(gpt_lab.prompting, "complete", record)
        accuracy_vs_shots(stub_model(512), TOK, TASK, shots=shots, n_eval=n_eval, seed=seed, shot_examples=pool_arg,
                          instruction="Days:", answer_prefix=" ->", separator="\n", max_new_tokens=5, batch_size=3)
        want = spec_prompts(TASK, pool_arg or TASK, shots, n_eval, seed, "Days:", " ->", "\n")
        assert [prompts for prompts, _, _ in record.calls] == [want[k] for k in shots]
        assert {(n, b) for _, n, b in record.calls} == {(5, 3)}
        for k in shots:
            for (x, y), prompt in zip(TASK, want[k]):
                lines = prompt.split("\n")[1:-1]
                assert len(lines) == k and not any(line.startswith(f"{x} ->") or line.endswith(f"-> {y}")
                                                   for line in lines)


def test_lab06_accuracy_exact_match_of_stripped_outputs(monkeypatch):
    stated(LAB6, "acc-text", "an answer is right when it equals the expected output stripped of surrounding spaces",
           "accuracy = right answers / number of queries, a float",
           "or an object with `.code` and `.answer` (the data set of Lab 7, `gpt_lab.sft.SFTExample`), read as "
           "`(code, answer)`")
    monkeypatch.setattr(gpt_lab.prompting, "complete", CompleteRecorder("Tuesday"))
    task = [("a", "Tuesday"), ("b", " Tuesday "), ("c", "tuesday"), ("d", "Tuesday!"), ("e", "\tTuesday")]
    acc = accuracy_vs_shots(stub_model(512), TOK, task, shots=(0, 1), answer_prefix=" ->", separator="\n")
    assert acc == {0: 0.6, 1: 0.6} and all(type(a) is float for a in acc.values())
    examples = [sft.SFTExample("S", f"Q: {x}", y, "t", "m", x) for x, y in task]
    assert accuracy_vs_shots(stub_model(512), TOK, examples, shots=(0, 2), answer_prefix=" ->", separator="\n") \
        == {0: 0.6, 2: 0.6}


def test_lab06_accuracy_raises_value_errors(monkeypatch):
    stated(LAB6, "acc-text", "raise a `ValueError` when there is no query, when a query has fewer than "
           "`max(shots)` candidates (`rng.sample` raises it for you), or when a prompt leaves no room for the answer: "
           "the longest `k`-shot prompt of `L` tokens needs `L + max_new_tokens - 1 <= block_size`")
    monkeypatch.setattr(gpt_lab.prompting, "complete", CompleteRecorder())
    fmt = dict(answer_prefix=" ->", separator="\n")
    with pytest.raises(ValueError):
        accuracy_vs_shots(stub_model(512), TOK, [], shots=(0,), **fmt)
    with pytest.raises(ValueError):
        accuracy_vs_shots(stub_model(512), TOK, TASK, shots=(0,), n_eval=0, **fmt)
    with pytest.raises(ValueError):  # 6 candidates per query (the others), 7 shots asked
        accuracy_vs_shots(stub_model(512), TOK, TASK, shots=(0, 7), **fmt)
    with pytest.raises(ValueError, match="Sample larger than population"):
        random.Random(0).sample(TASK[:6], 7)
    longest = max(len(TOK.encode(few_shot_prompt([], x, "", " ->", "\n"))) for x, _ in TASK)
    accuracy_vs_shots(stub_model(longest + 4), TOK, TASK, shots=(0,), max_new_tokens=5, **fmt)  # L + 5 - 1 fits
    with pytest.raises(ValueError):
        accuracy_vs_shots(stub_model(longest + 3), TOK, TASK, shots=(0,), max_new_tokens=5, **fmt)


# --------------------------------------------------------------------------- lab 7: apply_chat_template

LAB7 = "lab07-sft"
CODE = "def add(a, b):\n    return a + b"
USER = f"Extract the function name from the code.\n\n{CODE}"


def msg(role, content):
    return {"role": role, "content": content}


def test_lab07_template_format():
    stated(LAB7, "template-text", 'without one, the system message is `SYSTEM_PROMPT`; a system message with empty '
           "content means no `<<SYS>>` block at all",
           'then `"user"` and `"assistant"` messages alternating, starting with `"user"`',
           'a user message becomes `"[INST] " + sys_block + content + " [/INST]"`, where `sys_block` is '
           '`"<<SYS>>\\n{system}\\n<</SYS>>\\n\\n"` in the **first** user message only (and `""` after)',
           'an assistant message becomes `" " + content + "<|endoftext|>"` (`ENDOFTEXT`)',
           "the pieces are concatenated with nothing in between. When the last message is the user's, the text "
           "ends right after `[/INST]`")
    sys_block = f"<<SYS>>\n{sft.SYSTEM_PROMPT}\n<</SYS>>\n\n"
    one = f"[INST] {sys_block}{USER} [/INST] add{ENDOFTEXT}"
    assert sft.apply_chat_template([msg("system", sft.SYSTEM_PROMPT), msg("user", USER), msg("assistant", "add")]) \
        == one
    assert sft.apply_chat_template([msg("user", USER), msg("assistant", "add")]) == one
    assert sft.apply_chat_template([msg("user", USER)]) == f"[INST] {sys_block}{USER} [/INST]"
    assert sft.apply_chat_template([msg("system", ""), msg("user", USER)]) == f"[INST] {USER} [/INST]"
    assert sft.apply_chat_template([msg("system", "S"), msg("user", "a"), msg("assistant", "b"), msg("user", "c"),
                                    msg("assistant", "d"), msg("user", "e")]) == \
        f"[INST] <<SYS>>\nS\n<</SYS>>\n\na [/INST] b{ENDOFTEXT}[INST] c [/INST] d{ENDOFTEXT}[INST] e [/INST]"
    assert sft.apply_chat_template([MappingProxyType(msg("user", "a"))]) == f"[INST] {sys_block}a [/INST]"


@pytest.mark.parametrize("messages", [
    [], [msg("system", "S")], [msg("assistant", "x")], [msg("user", "a"), msg("user", "b")],
    [msg("user", "a"), msg("assistant", "b"), msg("assistant", "c")], [{"role": "user"}],
    [{"role": "user", "content": "a", "name": "me"}], [msg("user", "a"), msg("system", "S")], ["user: a"],
    [msg("user", "a"), msg("assistant", "b"), msg("system", "S"), msg("user", "c")],
], ids=["empty", "system-only", "assistant-first", "user-twice", "assistant-twice", "no-content", "extra-key",
        "system-later", "not-a-mapping", "system-in-the-middle"])
def test_lab07_template_value_errors(messages):
    stated(LAB7, "template-text", 'raise a `ValueError` if a message is not a dict (or another `Mapping`) with '
           'exactly the keys `"role"` and `"content"`, if there is no user message, or if the roles do not alternate '
           'as described (a `"system"` message anywhere but first is out of order too)')
    with pytest.raises(ValueError):
        sft.apply_chat_template(messages)


# --------------------------------------------------------------------------- lab 7: build_sft_example


@pytest.mark.parametrize("system", [None, "", "You name functions."])
@pytest.mark.parametrize("mask", [True, False])
def test_lab07_sft_example_tokens_and_labels(system, mask):
    stated(LAB7, "example-text", "the prompt is `apply_chat_template(...)` of the system message (none when "
           "`system` is `None`, so the default applies) and the user message, tokenized **alone** with "
           "`tokenizer.encode`",
           'the answer tokens are `tokenizer.encode(" " + answer)` followed by `tokenizer.eot_token`',
           "`input_ids` = prompt tokens + answer tokens",
           "`labels` = `IGNORE_INDEX` at every prompt position when `mask_prompt` (else the prompt tokens "
           "themselves), then the answer tokens",
           "labels **aligned with the inputs**")
    messages = ([] if system is None else [msg("system", system)]) + [msg("user", USER)]
    prompt = TOK.encode(sft.apply_chat_template(messages))
    answer = TOK.encode(" add_one") + [TOK.eot_token]
    ids, labels = sft.build_sft_example(system, USER, "add_one", TOK, mask)
    assert ids == prompt + answer
    assert labels == ([IGNORE_INDEX] * len(prompt) if mask else prompt) + answer
    if mask:  # after the shift, the first learned prediction is made at the last prompt token
        targets = shift_labels(torch.tensor([labels]))[0]
        assert (targets != IGNORE_INDEX).nonzero().flatten().tolist() == list(range(len(prompt) - 1, len(ids) - 1))


@pytest.mark.parametrize("answer", ["", " ", "\n\t"])
def test_lab07_sft_example_rejects_an_empty_answer(answer):
    stated(LAB7, "example-text", "raise a `ValueError` if the answer is empty (or only spaces)")
    with pytest.raises(ValueError):
        sft.build_sft_example(None, USER, answer, TOK)


# --------------------------------------------------------------------------- lab 7: evaluate_exact_match


def examples_of(users_answers):
    return [sft.SFTExample(sft.SYSTEM_PROMPT, u, a, "function-name", "m") for u, a in users_answers]


def test_lab07_exact_match_prompt_sorting_and_budget(monkeypatch):
    stated(LAB7, "eval-spec", "the prompt of an example is `apply_chat_template(example.messages(with_answer=False))`",
           "**sort** the prompts by their number of tokens, shortest first, prompts of equal length keeping their "
           "order (`sorted(range(len(prompts)), key=lambda i: len(prompts[i]))`), and take them `batch_size` at a "
           "time in that order",
           "where `n = min(max_new_tokens, block_size + 1 - L)` and `L` is the number of tokens of the longest "
           "prompt of the batch")
    record = Recorder(lambda p: " add")
    monkeypatch.setattr(gpt_lab.decoding, "generate", record)
    examples = examples_of([("x " * n, "add") for n in (30, 2, 17, 2, 40, 9)])
    prompts = [TOK.encode(sft.apply_chat_template(e.messages(with_answer=False))) for e in examples]
    block = max(len(p) for p in prompts) + 3
    for max_new, batch_size in [(24, 2), (2, 4), (5, 1)]:
        record.calls.clear()
        assert sft.evaluate_exact_match(stub_model(block), TOK, examples, max_new, batch_size) == 1.0
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
        assert [c["prompts"] for c in record.calls] == [[prompts[i] for i in rows] for rows in batches]
        assert [c["n"] for c in record.calls] == \
            [min(max_new, block + 1 - max(len(prompts[i]) for i in rows)) for rows in batches]
        assert all(c["strategy"] == "greedy" and c["eos_id"] == TOK.eot_token for c in record.calls)


def test_lab07_exact_match_cut_strip_and_order(monkeypatch):
    stated(LAB7, "eval-spec", "the model's answer is the decoded new tokens **cut at the first newline** (the text "
           "before it) and stripped; it is right when it equals the example's `answer`, stripped. Compare each "
           "answer with its own example")
    # user message -> what the model writes; users of different lengths, so sorting changes the order
    replies = {"u1": "  add\nsub", "u2 u2 u2 u2": " neg  ", "u3 u3": "\nadd", "u4 u4 u4 u4 u4 u4": " get\n",
               "u5": " x y"}
    user_of = lambda p: TOK.decode(p).split("\n\n")[-1].removesuffix(" [/INST]")  # noqa: E731
    monkeypatch.setattr(gpt_lab.decoding, "generate", Recorder(lambda p: replies[user_of(p)]))
    examples = examples_of(zip(replies, [" add ", "neg", "add", "get", "x"]))
    for batch_size in (1, 2, 32):  # right: u1 (cut, stripped), u2 (stripped), u4 (cut); wrong: u3 (empty), u5
        assert sft.evaluate_exact_match(stub_model(256), TOK, examples, 24, batch_size) == 3 / 5


def test_lab07_exact_match_rejects_no_examples():
    stated(LAB7, "eval-spec", "raise a `ValueError` when `examples` is empty")
    with pytest.raises(ValueError):
        sft.evaluate_exact_match(stub_model(256), TOK, [])


# --------------------------------------------------------------------------- the grader's written-out references
# The hidden checks run a student's accuracy_vs_shots with the grader's few_shot_prompt and complete, and their
# build_sft_example and evaluate_exact_match with the grader's apply_chat_template (points per idea, issue 19);
# those must do exactly what gpt_lab's do, without being copies of them (the copy watch would flag the student).


def test_grader_references_agree_with_gpt_lab():
    from gpt_lab_grader.borrowing import fingerprint
    from gpt_lab_grader.labs.lab06_prompting.scenarios import reference_complete, reference_few_shot_prompt
    from gpt_lab_grader.labs.lab07_sft.scenarios import reference_apply_chat_template

    pairs = [("a", "1"), ("def f():\n    pass", "f"), ("é", " ß ")]
    for n in range(4):
        for kwargs in [{}, {"instruction": "Count:"}, {"answer_prefix": "\n# name:", "separator": "\n\n"}]:
            assert reference_few_shot_prompt(pairs[:n], "q", **kwargs) == few_shot_prompt(pairs[:n], "q", **kwargs)
    model = tiny_gpt(2, vocab_size=TOK.n_vocab, block_size=24, n_embd=16)
    prompts = [" ".join(["w"] * n) for n in (20, 3, 22, 7, 18, 1, 23)]
    for max_new, batch_size in [(8, 2), (3, 3), (8, 16)]:
        assert reference_complete(model, TOK, prompts, max_new, batch_size) == complete(model, TOK, prompts, max_new,
                                                                                        batch_size)
    for messages in [[msg("user", USER)], [msg("system", ""), msg("user", "a"), msg("assistant", "b")],
                     [msg("system", "S"), msg("user", "a"), msg("assistant", "b"), msg("user", "c")],
                     [MappingProxyType(msg("user", "a")), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d")]]:
        assert reference_apply_chat_template(messages) == sft.apply_chat_template(messages)
    for bad in [[], [msg("system", "S")], [msg("assistant", "x")], [msg("user", "a"), msg("user", "b")],
                [{"role": "user"}], [msg("user", "a"), msg("system", "S")], ["user: a"]]:
        with pytest.raises(ValueError):
            reference_apply_chat_template(bad)
    for mine, theirs in [(reference_few_shot_prompt, few_shot_prompt), (reference_complete, complete),
                         (reference_apply_chat_template, sft.apply_chat_template)]:
        assert fingerprint(mine.__code__) != fingerprint(theirs.__code__)


def test_bigram_gpt_writes_its_script():
    """The scripted test model of the checks: the greedy next token is set by the last token alone, also in a
    left-padded batch, so it writes the end token and newlines where a check needs them."""
    from gpt_lab.tokenizer import CompactTokenizer
    from gpt_lab_grader.labs.scenarios import bigram_gpt

    tok = CompactTokenizer(TOK.encode(" add neg one two three four"))
    eot, a, b, nl = tok.eot_token, tok.encode(" add")[0], tok.encode(" neg")[0], tok.encode("\n")[0]
    model = bigram_gpt([(a, eot), (eot, b), (b, nl)], tok.n_vocab, block_size=16, default=a)
    prompts = [tok.encode("x"), tok.encode("one two three four"), [b]]
    assert generate(model, prompts, 5) == [[a, eot, b, nl, a], [a, eot, b, nl, a], [nl, a, eot, b, nl]]
    assert generate(model, prompts, 5, eos_id=eot) == [[a], [a], [nl, a]]
    assert model(torch.tensor([prompts[1]]))[0][0].argmax(-1).tolist() == [a] * len(prompts[1])

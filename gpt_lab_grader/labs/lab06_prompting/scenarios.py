"""Scenarios of lab06-prompting: a small model trained (by the check, once) on a pattern task is sent here as
weights + config + the kept ids of its tokenizer; or a scripted model (`bigram_gpt`) as its successor table.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).

Points per idea (issue 19): the accuracy_vs_shots scenarios run the student's accuracy_vs_shots with the
references of few_shot_prompt and complete below in its namespace (`reference_parts`), so a mistake in
few_shot_prompt or complete costs their own points, not accuracy_vs_shots' again. They are written out here
(gpt_lab.prompting's own are what the tripwire watches while student code runs) and do what gpt_lab.prompting's
do, which the checks compare with (the solution passes every check only if the two agree).
"""
from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from gpt_lab_grader.labs.scenarios import bigram_gpt, names_bound, reference_parts, scenario, tokenizer_of


def reference_few_shot_prompt(examples, query, instruction="", answer_prefix=" ->", separator="\n") -> str:
    """[instruction,] "{input}{answer_prefix} {output}" per example, then "{query}{answer_prefix}", joined."""
    parts = [f"{x}{answer_prefix} {y}" for x, y in examples] + [query + answer_prefix]
    if instruction:
        parts.insert(0, instruction)
    return separator.join(parts)


def reference_complete(model, tokenizer, prompts, max_new_tokens=16, batch_size=16) -> list[str]:
    """Greedy answers, batched by prompt length, up to the end token, cut at the first newline, stripped."""
    from gpt_lab.decoding import generate

    encoded = [tokenizer.encode(p) for p in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    answers = {}
    for rows in (order[s:s + batch_size] for s in range(0, len(order), batch_size)):
        room = model.config.block_size + 1 - max(len(encoded[i]) for i in rows)
        new = generate(model, [encoded[i] for i in rows], min(max_new_tokens, max(room, 1)), strategy="greedy",
                       eos_id=tokenizer.eot_token)
        answers.update((i, tokenizer.decode(t).partition("\n")[0].strip()) for i, t in zip(rows, new))
    return [answers[i] for i in range(len(encoded))]


def rebuild_model(state: dict, config: dict, kept_ids: Sequence[int]):
    """(GPT in eval mode, CompactTokenizer) from what a check sends over the pipe."""
    from gpt_lab.model import GPT, GPTConfig

    model = GPT(GPTConfig(**config))
    model.load_state_dict(state)
    return model.eval(), tokenizer_of(kept_ids)


@scenario
def completions(impl, state: dict, config: dict, kept_ids: Sequence[int], prompts: Sequence[str],
                max_new_tokens: int = 16, batch_size: int = 16) -> list[str]:
    """Your complete() on a small trained model: one answer per prompt."""
    model, tok = rebuild_model(state, config, kept_ids)
    return impl.complete(model, tok, list(prompts), max_new_tokens, batch_size)


@scenario
def scripted_completions(impl, kept_ids: Sequence[int], successors: Sequence[tuple[int, int]], default: int,
                         block_size: int, prompts: Sequence[str], max_new_tokens: int = 16,
                         batch_size: int = 16) -> list[str]:
    """Your complete() on a scripted model that writes the end token (and newlines, and text after both)."""
    tok = tokenizer_of(kept_ids)
    model = bigram_gpt(successors, tok.n_vocab, block_size, default)
    return impl.complete(model, tok, list(prompts), max_new_tokens, batch_size)


@scenario
def shot_accuracy(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                  as_sft_examples: bool = False, shot_examples: Sequence | None = None, **kwargs) -> dict:
    """Your accuracy_vs_shots on a small trained model (with the reference few_shot_prompt and complete):
    {shots: accuracy}."""
    from gpt_lab.sft import SYSTEM_PROMPT, SFTExample

    model, tok = rebuild_model(state, config, kept_ids)
    task = [tuple(p) for p in task_examples]
    if as_sft_examples:  # objects with .code and .answer, like the lab's data set
        task = [SFTExample(SYSTEM_PROMPT, f"Q: {x}", y, "pattern", "days", x) for x, y in task]
    pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
    with reference_parts(impl, few_shot_prompt=reference_few_shot_prompt, complete=reference_complete):
        return impl.accuracy_vs_shots(model, tok, task, shot_examples=pool, **kwargs)


@scenario
def shot_prompts(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                 shot_examples: Sequence | None = None, answer: str = "Tuesday", **kwargs) -> dict:
    """The prompts your accuracy_vs_shots (with the reference few_shot_prompt) hands to complete (which answers
    `answer` to every prompt here), and the accuracy it reports:
    {"prompts": sorted list, "max_new_tokens": [...], "accuracy": {...}}."""
    model, tok = rebuild_model(state, config, kept_ids)
    calls = []

    def recorder(model, tokenizer, prompts, max_new_tokens=16, batch_size=16):
        calls.append((list(prompts), max_new_tokens))
        return [answer] * len(prompts)

    fn = impl.accuracy_vs_shots
    space = getattr(fn, "__wrapped__", fn).__globals__  # where its `complete` is looked up (gpt_lab's too)
    pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
    with names_bound(space, complete=recorder), reference_parts(impl, few_shot_prompt=reference_few_shot_prompt):
        accuracy = fn(model, tok, [tuple(p) for p in task_examples], shot_examples=pool, **kwargs)
    return {"prompts": sorted(p for prompts, _ in calls for p in prompts),
            "max_new_tokens": sorted({n for _, n in calls}), "accuracy": accuracy}


def reference_lab06() -> SimpleNamespace:
    from gpt_lab import prompting

    return SimpleNamespace(few_shot_prompt=prompting.few_shot_prompt, complete=prompting.complete,
                           accuracy_vs_shots=prompting.accuracy_vs_shots)

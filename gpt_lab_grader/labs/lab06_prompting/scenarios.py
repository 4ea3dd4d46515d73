"""Scenarios of lab06-prompting: a small model trained (by the check, once) on a pattern task is sent here as
weights + config + the kept ids of its tokenizer.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from gpt_lab_grader.labs.scenarios import scenario, tokenizer_of


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
def shot_accuracy(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                  as_sft_examples: bool = False, shot_examples: Sequence | None = None, **kwargs) -> dict:
    """Your accuracy_vs_shots on a small trained model: {shots: accuracy}."""
    from gpt_lab.sft import SYSTEM_PROMPT, SFTExample

    model, tok = rebuild_model(state, config, kept_ids)
    task = [tuple(p) for p in task_examples]
    if as_sft_examples:  # objects with .code and .answer, like the lab's data set
        task = [SFTExample(SYSTEM_PROMPT, f"Q: {x}", y, "pattern", "days", x) for x, y in task]
    pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
    return impl.accuracy_vs_shots(model, tok, task, shot_examples=pool, **kwargs)


@scenario
def shot_prompts(impl, state: dict, config: dict, kept_ids: Sequence[int], task_examples: Sequence,
                 shot_examples: Sequence | None = None, answer: str = "Tuesday", **kwargs) -> dict:
    """The prompts your accuracy_vs_shots hands to your complete() (which answers `answer` to every prompt
    here), and the accuracy it reports: {"prompts": sorted list, "max_new_tokens": [...], "accuracy": {...}}."""
    model, tok = rebuild_model(state, config, kept_ids)
    calls = []

    def recorder(model, tokenizer, prompts, max_new_tokens=16, batch_size=16):
        calls.append((list(prompts), max_new_tokens))
        return [answer] * len(prompts)

    fn = impl.accuracy_vs_shots
    namespace = getattr(fn, "__wrapped__", fn).__globals__  # where its `complete` is looked up
    saved = namespace.get("complete")
    namespace["complete"] = recorder
    try:
        pool = None if shot_examples is None else [tuple(p) for p in shot_examples]
        accuracy = fn(model, tok, [tuple(p) for p in task_examples], shot_examples=pool, **kwargs)
    finally:
        namespace["complete"] = saved
    return {"prompts": sorted(p for prompts, _ in calls for p in prompts),
            "max_new_tokens": sorted({n for _, n in calls}), "accuracy": accuracy}


def reference_lab06() -> SimpleNamespace:
    from gpt_lab import prompting

    return SimpleNamespace(few_shot_prompt=prompting.few_shot_prompt, complete=prompting.complete,
                           accuracy_vs_shots=prompting.accuracy_vs_shots)

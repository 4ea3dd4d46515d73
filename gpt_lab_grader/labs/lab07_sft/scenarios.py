"""Scenarios of lab07-sft: the student's chat template, SFT examples and exact-match evaluation.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).
"""
from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from gpt_lab_grader.labs.scenarios import scenario, tiny_gpt, tokenizer_of


@scenario
def sft_example(impl, system: str | None, user: str, answer: str, kept_ids: Sequence[int] | None = None,
                mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Your build_sft_example with a given tokenizer: (input_ids, labels)."""
    ids, labels = impl.build_sft_example(system, user, answer, tokenizer_of(kept_ids), mask_prompt)
    if not isinstance(ids, list) or not isinstance(labels, list):
        raise AssertionError("build_sft_example should return two lists of ints (input_ids, labels), got "
                             f"{type(ids).__name__} and {type(labels).__name__}")
    return ids, labels


@scenario
def exact_match(impl, exchanges: Sequence[tuple[str, str, str]], kept_ids: Sequence[int], max_new_tokens: int = 24,
                batch_size: int = 32, seed: int = 0, **config) -> float:
    """Your evaluate_exact_match of a seeded GPT on (system, user, answer) examples."""
    from gpt_lab.sft import SFTExample

    model = tiny_gpt(seed, **config)
    examples = [SFTExample(s, u, a, "function-name", "check") for s, u, a in exchanges]
    return impl.evaluate_exact_match(model, tokenizer_of(kept_ids), examples, max_new_tokens, batch_size)


def reference_lab07() -> SimpleNamespace:
    from gpt_lab import sft

    return SimpleNamespace(apply_chat_template=sft.apply_chat_template, build_sft_example=sft.build_sft_example,
                           evaluate_exact_match=sft.evaluate_exact_match)

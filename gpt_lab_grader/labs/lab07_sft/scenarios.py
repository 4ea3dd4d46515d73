"""Scenarios of lab07-sft: the student's chat template, SFT examples and exact-match evaluation.

See `gpt_lab_grader.labs.scenarios` for the contract (`fn(impl, **kwargs)`, plain results, CPU, seconds).

Points per idea (issue 19): build_sft_example and evaluate_exact_match run with the reference
apply_chat_template below in the student's namespace (`reference_parts`), so a mistake in the template costs
apply_chat_template's points only. It is written out here (gpt_lab.sft's own is what the tripwire watches while
student code runs) and writes what gpt_lab.sft's writes, which the checks compare with.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from types import SimpleNamespace

from gpt_lab.sft import SYSTEM_PROMPT, SFTExample
from gpt_lab.tokenizer import ENDOFTEXT
from gpt_lab_grader.labs.scenarios import bigram_gpt, reference_parts, scenario, tiny_gpt, tokenizer_of


def reference_apply_chat_template(messages) -> str:
    """The lab's Llama-2 template: "[INST] <<SYS>>\\n{system}\\n<</SYS>>\\n\\n{user} [/INST] {answer}<|endoftext|>"
    for the first exchange, "[INST] {user} [/INST] {answer}<|endoftext|>" for later ones."""
    messages = list(messages)
    if any(not isinstance(m, Mapping) or set(m) != {"role", "content"} for m in messages):
        raise ValueError("each message must be a mapping with exactly the keys 'role' and 'content'")
    system = SYSTEM_PROMPT
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    if not messages:
        raise ValueError("no user message")
    pieces = []
    for i, m in enumerate(messages):
        if m["role"] != ("user", "assistant")[i % 2]:
            raise ValueError(f"message {i} has the role {m['role']!r} out of order")
        if i % 2:
            pieces.append(f" {m['content']}{ENDOFTEXT}")
        else:
            sys_block = f"<<SYS>>\n{system}\n<</SYS>>\n\n" if i == 0 and system else ""
            pieces.append(f"[INST] {sys_block}{m['content']} [/INST]")
    return "".join(pieces)


@scenario
def sft_example(impl, system: str | None, user: str, answer: str, kept_ids: Sequence[int] | None = None,
                mask_prompt: bool = True) -> tuple[list[int], list[int]]:
    """Your build_sft_example (with the reference apply_chat_template) and a given tokenizer: (input_ids, labels)."""
    with reference_parts(impl, apply_chat_template=reference_apply_chat_template):
        ids, labels = impl.build_sft_example(system, user, answer, tokenizer_of(kept_ids), mask_prompt)
    if not isinstance(ids, list) or not isinstance(labels, list):
        raise AssertionError("build_sft_example should return two lists of ints (input_ids, labels), got "
                             f"{type(ids).__name__} and {type(labels).__name__}")
    return ids, labels


def _examples(exchanges: Sequence[tuple[str, str, str]]) -> list[SFTExample]:
    return [SFTExample(s, u, a, "function-name", "check") for s, u, a in exchanges]


@scenario
def exact_match(impl, exchanges: Sequence[tuple[str, str, str]], kept_ids: Sequence[int], max_new_tokens: int = 24,
                batch_size: int = 32, seed: int = 0, **config) -> float:
    """Your evaluate_exact_match (with the reference apply_chat_template) of a seeded GPT on (system, user, answer)
    examples."""
    model = tiny_gpt(seed, **config)
    with reference_parts(impl, apply_chat_template=reference_apply_chat_template):
        return impl.evaluate_exact_match(model, tokenizer_of(kept_ids), _examples(exchanges), max_new_tokens,
                                         batch_size)


@scenario
def scripted_exact_match(impl, exchanges: Sequence[tuple[str, str, str]], kept_ids: Sequence[int],
                         successors: Sequence[tuple[int, int]], default: int, block_size: int,
                         max_new_tokens: int = 24, batch_size: int = 32) -> float:
    """Your evaluate_exact_match (with the reference apply_chat_template) of a scripted model that writes the end
    token or a newline after its answer, and more text after it."""
    tok = tokenizer_of(kept_ids)
    model = bigram_gpt(successors, tok.n_vocab, block_size, default)
    with reference_parts(impl, apply_chat_template=reference_apply_chat_template):
        return impl.evaluate_exact_match(model, tok, _examples(exchanges), max_new_tokens, batch_size)


def reference_lab07() -> SimpleNamespace:
    from gpt_lab import sft

    return SimpleNamespace(apply_chat_template=sft.apply_chat_template, build_sft_example=sft.build_sft_example,
                           evaluate_exact_match=sft.evaluate_exact_match)

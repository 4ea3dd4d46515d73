"""Hidden checks of lab 7 (SFT): chat template, tokens and label mask, exact-match evaluation.

Run by `gpt_lab_grader.checks.run_checks("lab07-sft", notebook)`; the student's code is reached
only through the `student` fixture (gpt_lab_grader/labs/adapters.py).

Points per idea: apply_chat_template 19, build_sft_example 15, evaluate_exact_match 9. The build_sft_example
and evaluate_exact_match checks run with the reference apply_chat_template (see scenarios.py), so a mistake in
the template costs its own points only.
"""
import pytest

from gpt_lab_grader.labs.adapters import expect_value_error
from gpt_lab import sft
from gpt_lab_grader.labs.lab07_sft import scenarios
from gpt_lab_grader.labs.scenarios import tiny_gpt
from gpt_lab.tokenizer import CompactTokenizer, get_tokenizer

LAB = "lab07-sft"
REFERENCE = scenarios.reference_lab07()
CODE = "def add(a, b):\n    return a + b"
USER = f"Extract the function name from the code.\n\n{CODE}"


def msg(role, content):
    return {"role": role, "content": content}



# --- apply_chat_template


@pytest.mark.points(1)
@pytest.mark.parametrize("messages", [
    [msg("system", "You are terse."), msg("user", USER), msg("assistant", "add")],
    [msg("user", USER), msg("assistant", "add")],
    [msg("system", "S"), msg("user", "Name it.")],
    [msg("user", "é\n\ttabs  and  spaces ")],
    [msg("system", ""), msg("user", USER), msg("assistant", "add")],
], ids=["system", "default-system", "prompt-only", "unicode-whitespace", "empty-system"])
def test_template_one_exchange(student, messages):
    """apply_chat_template writes one exchange in the Llama-2 format ([INST] <<SYS>> ... [/INST] answer<|endoftext|>)"""
    got = student.apply_chat_template(messages)
    assert type(got) is str, f"apply_chat_template should return a str, got {type(got).__name__}"
    assert got == sft.apply_chat_template(messages), "apply_chat_template's text is not the expected template"


@pytest.mark.points(2)
@pytest.mark.parametrize("messages", [
    [msg("system", "S"), msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d")],
    [msg("user", "a"), msg("assistant", "b"), msg("user", "c")],
    [msg("system", ""), msg("user", "a"), msg("assistant", "b"), msg("user", "c"), msg("assistant", "d"),
     msg("user", "e")],
], ids=["two-exchanges", "second-prompt", "three-turns-no-system"])
def test_template_several_exchanges(student, messages):
    """apply_chat_template appends later exchanges as [INST] user [/INST] answer<|endoftext|>, system block only once"""
    assert student.apply_chat_template(messages) == sft.apply_chat_template(messages), \
        "apply_chat_template's text for several exchanges is not the expected template"


@pytest.mark.points(1)
@pytest.mark.parametrize("messages", [
    [], [msg("system", "S")], [msg("assistant", "x")], [msg("user", "a"), msg("user", "b")],
    [msg("user", "a"), msg("assistant", "b"), msg("assistant", "c")], [{"role": "user"}],
    [{"role": "user", "content": "a", "name": "me"}], [msg("user", "a"), msg("system", "S")],
], ids=["empty", "system-only", "assistant-first", "user-twice", "assistant-twice", "no-content", "extra-key",
        "system-later"])
def test_template_rejects_bad_messages(student, messages):
    """apply_chat_template raises a ValueError for malformed messages or roles out of order"""
    expect_value_error(lambda: student.apply_chat_template(messages), what=f"apply_chat_template({messages})")


# --- build_sft_example

SMALL_KEPT = get_tokenizer().encode("[INST] <<SYS>>\n\n<</SYS>> [/INST] Extract the function name from the code. def")


@pytest.mark.points(2)
@pytest.mark.parametrize("system, answer, kept, mask", [
    (sft.SYSTEM_PROMPT, "add", None, True),
    (None, "add", None, True),
    ("", "add", None, True),
    ("You name functions.", "a, b", None, False),
    (sft.SYSTEM_PROMPT, "_parse_header_line", SMALL_KEPT, True),
    (None, "add", SMALL_KEPT, False),
], ids=["gpt2", "default-system", "no-system-block", "no-mask", "compact-tokenizer", "compact-no-mask"])
def test_sft_example(student, system, answer, kept, mask):
    """build_sft_example gives the prompt + answer + end tokens, and labels masked on the prompt only"""
    kwargs = dict(system=system, user=USER, answer=answer, kept_ids=kept, mask_prompt=mask)
    ids, labels = student.scenario("sft_example", **kwargs)
    want_ids, want_labels = scenarios.sft_example(REFERENCE, **kwargs)
    assert all(type(t) is int for t in ids + labels), "input_ids and labels should be lists of Python ints"
    assert len(ids) == len(labels), f"input_ids ({len(ids)}) and labels ({len(labels)}) must have the same length"
    assert ids == want_ids, f"input_ids are wrong ({len(ids)} tokens, expected {len(want_ids)})"
    if labels != want_labels:
        masked, want_masked = labels.count(sft.IGNORE_INDEX), want_labels.count(sft.IGNORE_INDEX)
        raise AssertionError(f"labels are wrong: {masked} positions are IGNORE_INDEX, expected {want_masked}"
                             if masked != want_masked else "labels are wrong (the right number of masked positions)")


@pytest.mark.points(1)
def test_sft_example_prompt_is_generation_prompt(student):
    """build_sft_example's prompt tokens are exactly the tokens of the prompt the model answers at generation time"""
    tok = get_tokenizer()
    ids, labels = student.scenario("sft_example", system=None, user="Name it.", answer="f", kept_ids=None)
    prompt = tok.encode(sft.apply_chat_template([msg("user", "Name it.")]))
    assert ids[:len(prompt)] == prompt, "the prompt part of input_ids differs from the encoded generation prompt"
    assert ids[len(prompt):] == tok.encode(" f") + [tok.eot_token], "the answer part should be ' f' and the end token"


@pytest.mark.points(1)
@pytest.mark.parametrize("answer", ["", "   "])
def test_sft_example_rejects_empty_answer(student, answer):
    """build_sft_example raises a ValueError for an empty answer"""
    expect_value_error(lambda: student.scenario("sft_example", system=None, user="Name it.", answer=answer), what=f"build_sft_example with answer {answer!r}")


# --- evaluate_exact_match

EVAL_TEXT = "[INST] <<SYS>>\n\n<</SYS>> [/INST] You are a helpful assistant in programming. Extract the function " \
            "name from the code. def return self a b x y add neg get set"
EVAL_KEPT = get_tokenizer().encode(EVAL_TEXT)
USERS = [f"Extract the function name from the code.\n\ndef {name}(self):\n    return {value}"
         for name, value in [("get", "self.a"), ("set", "b"), ("add", "a + b"), ("neg", "-x"), ("x", "y"),
                             ("y", "self"), ("a", "b"), ("b", "a")]]


def crafted_exchanges(seed, max_new_tokens=24, right=(0, 2, 3, 5)):
    """(system, user, answer) triples whose answers are the seeded model's own greedy answers (padded with spaces)
    at the indices `right`, and wrong elsewhere: a known accuracy for any correct evaluation."""
    tok = CompactTokenizer(EVAL_KEPT)
    model = tiny_gpt(seed, vocab_size=tok.n_vocab, block_size=96)
    examples = [sft.SFTExample(sft.SYSTEM_PROMPT, u, "?", "function-name", "check") for u in USERS]
    predictions = sft.predict(model, tok, examples, max_new_tokens=max_new_tokens, batch_size=1)
    return [(sft.SYSTEM_PROMPT, u, f" {p}  " if i in right else f"{p} wrong")
            for i, (u, p) in enumerate(zip(USERS, predictions))]


@pytest.mark.points(2)
@pytest.mark.parametrize("seed, max_new_tokens, batch_size", [(0, 24, 32), (1, 5, 3), (2, 8, 1)])
def test_exact_match(student, seed, max_new_tokens, batch_size):
    """evaluate_exact_match is the fraction of greedy answers (stripped) equal to the answers (stripped)"""
    kwargs = dict(exchanges=crafted_exchanges(seed, max_new_tokens), kept_ids=EVAL_KEPT, max_new_tokens=max_new_tokens,
                  batch_size=batch_size, seed=seed, vocab_size=CompactTokenizer(EVAL_KEPT).n_vocab, block_size=96)
    got = student.scenario("exact_match", **kwargs)
    want = scenarios.exact_match(REFERENCE, **kwargs)
    assert type(got) is float, f"evaluate_exact_match should return a float, got {type(got).__name__}"
    assert want == 0.5, "internal: the crafted examples should score 0.5"
    assert abs(got - want) < 1e-12, f"evaluate_exact_match gives {got}: check the prompt, decoding and stripping"


@pytest.mark.points(1)
def test_exact_match_rejects_no_examples(student):
    """evaluate_exact_match raises a ValueError when there are no examples"""
    vocab = CompactTokenizer(EVAL_KEPT).n_vocab
    expect_value_error(lambda: student.scenario("exact_match", exchanges=[], kept_ids=EVAL_KEPT, vocab_size=vocab,
                                                block_size=96), what="evaluate_exact_match([])")


SCRIPT_USERS = [("Name it.", " add "), (USERS[0], "add"), ("Extract the function name from the code.", "neg"),
                (USERS[2], "add\n"), ("x", "sub"), (USERS[5], "self")]


def scripted_eval(after: str) -> dict:
    """A scripted model (`bigram_gpt`, the next token set by the last one): every prompt ends with "]" (of [/INST]),
    then it writes " add", then `after` ("end": the end token, then " neg" and the end token again ...; "newline":
    a newline, then " neg", then the end token). Right answers: "add" (the first, second and fourth examples)."""
    tok = CompactTokenizer(EVAL_KEPT)

    def one(text):
        ids = tok.encode(text)
        assert len(ids) == 1, f"internal: {text!r} should be one token"
        return ids[0]

    eot = tok.eot_token
    chain = [(one("]"), one(" add")), (eot, one(" neg"))]
    chain += [(one(" add"), eot)] if after == "end" else [(one(" add"), one("\n")), (one("\n"), one(" neg"))]
    return dict(kept_ids=EVAL_KEPT, successors=chain, default=eot, block_size=96,
                exchanges=[(sft.SYSTEM_PROMPT, u, a) for u, a in SCRIPT_USERS])


@pytest.mark.points(1)
@pytest.mark.parametrize("after", ["end", "newline"], ids=["end-token", "newline"])
def test_exact_match_answer_ends(student, after):
    """evaluate_exact_match's answers stop at the end token (generate's eos_id) and are cut at the first newline"""
    kwargs = dict(scripted_eval(after), max_new_tokens=6, batch_size=4)
    got = student.scenario("scripted_exact_match", **kwargs)
    want = scenarios.scripted_exact_match(REFERENCE, **kwargs)
    assert want == 0.5, "internal: three of the six scripted answers should be right"
    assert type(got) is float, f"evaluate_exact_match should return a float, got {type(got).__name__}"
    stop = "stop each answer at the end token (eos_id)" if after == "end" else "cut each answer at the first newline"
    assert abs(got - want) < 1e-12, f"evaluate_exact_match gives {got} on a model that writes more after its " \
                                    f"answer: {stop}"

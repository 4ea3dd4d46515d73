import re

import numpy as np
import pytest
import torch

from gpt_lab.data import Repeats, collate, corpus_text, get_batch, load_corpus, pad_sequences, python_files
from gpt_lab.train import lm_batches
from gpt_lab.tokenizer import get_tokenizer


def test_python_corpus_is_the_standard_library():
    files = python_files()
    names = {p.name for p in files}
    assert {"os.py", "json", "functools.py"} & names
    assert not any("test" in p.parts[-2:-1] for p in files)
    corpus = load_corpus("python")
    assert len(corpus) > 1_000_000
    assert corpus.ids.dtype == np.uint16


def test_shakespeare_is_plain_play_text():
    text = corpus_text("shakespeare")
    assert "HAMLET:" in text
    assert "**" not in text and "\\[" not in text and "\n#" not in text
    assert len(load_corpus("shakespeare")) > 1_000_000


def test_local_file_and_folder(tmp_path):
    (tmp_path / "a.txt").write_text("hello world " * 50)
    (tmp_path / "b.txt").write_text("good night " * 50)
    one = load_corpus(tmp_path / "a.txt")
    assert get_tokenizer().decode(one.ids.tolist()) == "hello world " * 50
    both = load_corpus(tmp_path)
    assert "<|endoftext|>" in get_tokenizer().decode(both.ids.tolist())


def test_cache_is_reused_and_keyed_by_content(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("abc " * 10)
    first = load_corpus(path)
    assert load_corpus(path).ids.filename == first.ids.filename  # same cache file
    path.write_text("xyz " * 20)
    assert len(load_corpus(path)) != len(first)


def test_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown corpus"):
        load_corpus("no-such-corpus")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="empty"):
        load_corpus(tmp_path / "empty.txt")
    data = np.arange(10)
    with pytest.raises(ValueError, match="too short"):
        get_batch(data, 2, 10)
    with pytest.raises(ValueError, match="block_size must be positive"):
        get_batch(data, 2, 0)


def test_split_is_deterministic():
    corpus = load_corpus("shakespeare")
    train, val = corpus.split(0.1, chunk=1000)
    assert len(train) + len(val) == len(corpus)
    assert abs(len(val) / len(corpus) - 0.1) < 0.01
    # chunks 9, 19, 29, ... validate; the others train, in order
    assert np.array_equal(val[:2000], np.concatenate([corpus.ids[9000:10000], corpus.ids[19000:20000]]))
    assert np.array_equal(train[:10000], np.concatenate([corpus.ids[:9000], corpus.ids[10000:11000]]))
    again = corpus.split(0.1, chunk=1000)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    with pytest.raises(ValueError, match="val_fraction"):
        corpus.split(1.5)
    with pytest.raises(ValueError, match="chunk"):
        corpus.split(0.1, chunk=0)


def test_get_batch_windows_are_shifted_by_one():
    data = np.arange(1000)
    g = torch.Generator().manual_seed(0)
    x, y = get_batch(data, 8, 16, generator=g)
    assert x.shape == y.shape == (8, 16) and x.dtype == torch.long
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y[:, -1], x[:, -1] + 1)
    x2, _ = get_batch(data, 8, 16, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)


def test_collate_right_and_left_padding():
    seqs = [[1, 2, 3], [4], [5, 6]]
    ids, mask = collate(seqs, pad_id=0)
    assert ids.tolist() == [[1, 2, 3], [4, 0, 0], [5, 6, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    ids, mask = collate(seqs, pad_id=9, side="left")
    assert ids.tolist() == [[1, 2, 3], [9, 9, 4], [9, 5, 6]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]


def test_collate_truncation():
    seqs = [[1, 2, 3, 4, 5], [6, 7]]
    ids, mask = collate(seqs, 0, max_length=3)
    assert ids.tolist() == [[1, 2, 3], [6, 7, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    ids, _ = collate(seqs, 0, max_length=3, truncation_side="left")
    assert ids.tolist() == [[3, 4, 5], [6, 7, 0]]
    with pytest.raises(ValueError, match="side"):
        pad_sequences(seqs, 0, side="middle")
    with pytest.raises(ValueError, match="empty"):
        collate([], 0)


def _windows(B=64, width=129, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(1000, 2000, (B, width), generator=g)  # ids that copy rows (< 1000) never use


def test_repeats_write_a_span_again_at_a_varying_distance():
    """Span rows hold a span of length in [min_span, max_span] repeated after a gap in [0, max_gap]
    (found by brute force over all (start, length, gap)); other rows are unchanged."""
    windows = _windows()
    rep = Repeats(span_fraction=0.5, min_span=8, max_span=20, max_gap=10)
    out = rep.apply(windows, vocab_size=1000, generator=torch.Generator().manual_seed(1))
    changed = [b for b in range(64) if not torch.equal(out[b], windows[b])]
    assert len(changed) == 32
    gaps, lengths = set(), set()
    for b in changed:
        row = out[b].tolist()
        found = [(L, g) for L in range(8, 21) for g in range(11) for s in range(129 - 2 * L - g + 1)
                 if row[s:s + L] == row[s + L + g:s + 2 * L + g]]
        assert found, f"row {b} has no repeated span"
        L, g = max(found)
        lengths.add(L)
        gaps.add(g)
    assert len(lengths) > 3 and len(gaps) > 3  # lengths and distances vary from row to row


def test_repeats_copy_rows_repeat_random_ids_with_a_random_period():
    windows = _windows()
    rep = Repeats(copy_fraction=0.25, min_period=8)
    out = rep.apply(windows, vocab_size=1000, generator=torch.Generator().manual_seed(2))
    copy_rows = [b for b in range(64) if int(out[b].max()) < 1000]
    assert len(copy_rows) == 16
    periods = set()
    for b in copy_rows:
        row = out[b]
        period = next(d for d in range(1, 129) if torch.equal(row[d:], row[:-d]))
        assert 8 <= period <= 65
        periods.add(period)
    assert len(periods) > 5
    assert all(torch.equal(out[b], windows[b]) for b in range(64) if b not in copy_rows)


def test_lm_batches_rewrite_training_rows_only():
    ids = np.arange(5000) % 997 + 1000
    plain = lm_batches(ids, ids, 16, 64, seed=0)
    mixed = lm_batches(ids, ids, 16, 64, seed=0, repeats=Repeats(copy_fraction=0.5), vocab_size=1000)
    x, y = mixed("train", 3)
    assert (x.max(dim=1).values < 1000).sum() == 8 and torch.equal(x[:, 1:], y[:, :-1])
    assert all(torch.equal(a, b) for a, b in zip(plain("val", 3), mixed("val", 3)))
    with pytest.raises(ValueError, match="vocab_size"):
        get_batch(ids, 4, 8, repeats=Repeats(copy_fraction=0.5))
    with pytest.raises(ValueError, match="at most 1"):
        Repeats(span_fraction=0.7, copy_fraction=0.5)


def test_lesson_answers_read_each_question_off_the_function():
    from gpt_lab.data import LESSON_TASKS, lesson_answers

    record = {"name": "_read_mime_types", "arguments": "self, path, *rest"}
    assert lesson_answers(record) == {"name": "_read_mime_types", "first word": "read", "arguments": "self, path, *rest",
                                      "first argument": "path", "last argument": "*rest"}
    assert set(lesson_answers(record)) == set(LESSON_TASKS)
    assert lesson_answers({"name": "keys", "arguments": "self"}) == {"name": "keys", "first word": "keys"}
    assert lesson_answers({"name": "__", "arguments": ""})["first word"] == "__"


def test_lessons_write_functions_with_their_answers_in_one_format_per_row():
    """A lesson row is blocks of "{code}{marker} {answer}" with one marker and one question per row,
    answers read off the function's own code, and no held-out package in it."""
    from gpt_lab.data import LESSON_TASKS, LESSON_WORDS, function_lessons, lesson_answers, split_modules, stdlib_functions
    from gpt_lab.presets import course_tokenizer

    tok = course_tokenizer("python")
    lessons = function_lessons(tok, max_code_tokens=32)
    records = stdlib_functions()
    held_out = split_modules([r["module"] for r in records])
    by_code = {r["code"]: r for r in records}
    marker_texts = {tok.decode(m).lstrip("\n") for m in lessons.markers}
    assert "name" not in LESSON_WORDS and "arguments" not in LESSON_WORDS  # the few-shot formats stay unseen
    g = torch.Generator().manual_seed(0)
    tasks_seen = set()
    for _ in range(60):
        row = lessons.row(300, g)
        assert row.shape == (300,)
        # blocks start at a top-level def or decorator (a function's own code may hold blank lines)
        blocks = re.split(r"\n\n(?=@|def |async def )", tok.decode(row.tolist()))[:-1]  # the last may be cut
        markers, tasks = set(), set(LESSON_TASKS)
        for block in blocks:
            code, marker_line = block.rstrip("\n").rsplit("\n", 1)
            r = by_code[code]
            assert r["module"].split(".")[0] not in held_out
            answers = lesson_answers(r)
            fits = {t for t, a in answers.items() if marker_line.endswith(" " + a)
                    and marker_line[: -len(a) - 1] in marker_texts}
            assert fits, (marker_line, answers)
            tasks &= fits  # the row's one question answers every block
            markers.add(marker_line[: -len(answers[min(fits)]) - 1])
        assert len(blocks) >= 2 and len(markers) == 1 and tasks
        if len(tasks) == 1:
            tasks_seen |= tasks
    assert tasks_seen == set(LESSON_TASKS)


def test_repeats_turn_a_share_of_rows_into_lessons_only_when_given_lessons():
    from gpt_lab.data import LESSON_TASKS, Lessons

    lessons = Lessons({task: [([1, 2, 3], [4])] for task in LESSON_TASKS}, [[7]], [8])
    data = torch.arange(100, 1100)
    repeats = Repeats(lesson_fraction=0.5)
    g = torch.Generator().manual_seed(0)
    x, _ = get_batch(data, 8, 16, generator=g, repeats=repeats, lessons=lessons)
    lesson_rows = [row for row in x.tolist() if row[:4] == [1, 2, 3, 7]]
    assert len(lesson_rows) == 4
    x, _ = get_batch(data, 8, 16, generator=torch.Generator().manual_seed(0), repeats=repeats)
    assert (x >= 100).all()  # no lessons given: plain text
    with pytest.raises(ValueError, match="at most 1"):
        Repeats(span_fraction=0.5, copy_fraction=0.25, lesson_fraction=0.5)

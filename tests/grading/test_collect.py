"""Collecting submissions: the three layouts, LMS names, and the things a hostile upload can try."""
import json
import os
import zipfile

import pytest

from gpt_lab_grader.collect import collect_submissions, safe_student_id

LAB = "lab01-attention"


def nb(tag: str) -> bytes:
    """A tiny notebook whose content says which file it came from."""
    return json.dumps({"cells": [], "metadata": {"tag": tag}, "nbformat": 4, "nbformat_minor": 5}).encode()


def tag_of(sub) -> str:
    return json.loads(sub.notebook.read_bytes())["metadata"]["tag"]


def write(root, files: dict[str, bytes]):
    for name, data in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def test_folder_of_student_notebooks(tmp_path):
    src = tmp_path / "subs"
    write(src, {"alice.ipynb": nb("a"), "bob.ipynb": nb("b"), "notes.txt": b"x",
                ".ipynb_checkpoints/alice-checkpoint.ipynb": nb("old")})
    before = {p: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    subs = collect_submissions(src, LAB, tmp_path / "inbox")
    assert [(s.student, tag_of(s), s.error) for s in subs] == [("alice", "a", ""), ("bob", "b", "")]
    assert all(s.notebook.parent == tmp_path / "inbox" for s in subs)
    assert {p: p.read_bytes() for p in src.rglob("*") if p.is_file()} == before, "originals must not change"


def test_nbgrader_submitted_tree(tmp_path):
    write(tmp_path / "course", {
        f"submitted/alice/{LAB}/{LAB}.ipynb": nb("a"),
        f"submitted/bob/{LAB}/{LAB}.ipynb": nb("b"),
        "submitted/bob/lab02-masking/lab02-masking.ipynb": nb("other lab"),
        "source/whatever.ipynb": nb("not a submission")})
    subs = collect_submissions(tmp_path / "course", LAB, tmp_path / "inbox")
    assert [(s.student, tag_of(s)) for s in subs] == [("alice", "a"), ("bob", "b")]
    # pointing at submitted/ itself works too, as does the tree without the submitted/ level
    subs = collect_submissions(tmp_path / "course" / "submitted", LAB, tmp_path / "inbox2")
    assert [(s.student, tag_of(s)) for s in subs] == [("alice", "a"), ("bob", "b")]


def test_lms_zip_names_attempts_and_wrapper_folder(tmp_path):
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w") as z:
        # Blackboard / nbgrader docs: the latest attempt wins
        z.writestr(f"export/lab01_alice_attempt_2024-01-30-15-00-00_{LAB}.ipynb", nb("alice old"))
        z.writestr(f"export/lab01_alice_attempt_2024-02-01-09-00-00_{LAB}.ipynb", nb("alice new"))
        # Canvas, late submission
        z.writestr(f"export/bobsmith_late_12345_678901_{LAB}.ipynb", nb("bob"))
        # Moodle: one folder per student
        z.writestr("export/Carol Jones_4411_assignsubmission_file_/lab.ipynb", nb("carol"))
        z.writestr("export/__MACOSX/._x.ipynb", b"junk")
        z.writestr("../../escape.ipynb", nb("escape"))  # zip slip: ignored, never written
    subs = collect_submissions(archive, LAB, tmp_path / "inbox")
    assert [(s.student, tag_of(s)) for s in subs] == [("Carol_Jones", "carol"), ("alice", "alice new"),
                                                      ("bobsmith", "bob")]
    assert not (tmp_path / "escape.ipynb").exists() and not (tmp_path.parent / "escape.ipynb").exists()
    assert sorted(p.name for p in (tmp_path / "inbox").iterdir()) == ["Carol_Jones.ipynb", "alice.ipynb",
                                                                       "bobsmith.ipynb"]


def test_custom_name_regex(tmp_path):
    write(tmp_path / "subs", {"hw1-s1234567-final.ipynb": nb("x")})
    subs = collect_submissions(tmp_path / "subs", LAB, tmp_path / "inbox",
                               name_regex=r"hw1-(?P<student_id>s\d+)-(?P<file_id>\w+)\.ipynb")
    assert [(s.student, tag_of(s)) for s in subs] == [("s1234567", "x")]
    with pytest.raises(ValueError, match="student_id"):
        collect_submissions(tmp_path / "subs", LAB, tmp_path / "inbox", name_regex=r"(?P<name>.*)")


def test_ambiguous_oversized_and_linked_submissions_get_an_error_row(tmp_path, monkeypatch):
    src = tmp_path / "subs"
    write(src, {"dave/first.ipynb": nb("1"), "dave/second.ipynb": nb("2"),
                f"erin/notes.ipynb": nb("n"), f"erin/{LAB}.ipynb": nb("e"),
                "frank.ipynb": nb("f"), "secret.txt": b"instructor only"})
    os.symlink(tmp_path / "subs" / "secret.txt", src / "mallory.ipynb")
    monkeypatch.setattr("gpt_lab_grader.collect.MAX_NOTEBOOK_BYTES", 200)
    write(src, {"frank.ipynb": b"{" + b" " * 300 + b"}"})
    subs = {s.student: s for s in collect_submissions(src, LAB, tmp_path / "inbox")}
    assert sorted(subs) == ["dave", "erin", "frank", "mallory"]
    assert subs["dave"].notebook is None and "several notebooks" in subs["dave"].error
    assert tag_of(subs["erin"]) == "e"  # the one named after the lab
    assert subs["frank"].notebook is None and "limit" in subs["frank"].error
    assert subs["mallory"].notebook is None and "symbolic link" in subs["mallory"].error


def test_student_ids_are_safe_names():
    assert safe_student_id("Ann O'Neil") == "Ann_O_Neil"
    assert safe_student_id("../../etc/passwd") == "etc_passwd"
    assert safe_student_id("=HYPERLINK(1)") == "HYPERLINK_1"
    assert safe_student_id("...") == "unnamed"


def test_missing_source_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither a folder nor a .zip"):
        collect_submissions(tmp_path / "nope", LAB, tmp_path / "inbox")

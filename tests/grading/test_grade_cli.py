"""`gpt-lab-grade` refuses bad arguments with a clear message, before grading anything."""
import pytest
from grader import REPO

import gpt_lab_grader.grade
from gpt_lab_grader import confine
from gpt_lab_grader.cli import main


@pytest.mark.parametrize("argv, message", [
    (["lab99", "{tmp}"], "unknown lab 'lab99'"),
    (["lab01", "{tmp}/nothing-here"], "neither a folder nor a .zip"),
    (["lab01", "{tmp}", "--out", "{tmp}/out"], "inside the submissions folder"),
    (["lab01", "{tmp}", "--jobs", "0"], "need jobs >= 1"),
    (["attention", "{tmp}/subs", "--out", "{tmp}/mine"], "gpt-lab-grade did not write"),
    (["lab01", "{tmp}/subs", "--course", "{tmp}"], "is not a course folder (it has no solutions/)"),
])
def test_clear_errors(tmp_path, capsys, argv, message):
    (tmp_path / "subs").mkdir()
    (tmp_path / "mine" / "feedback").mkdir(parents=True)  # someone else's folder: never deleted
    (tmp_path / "mine" / "feedback" / "keep.txt").write_text("mine")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv if "--course" in argv else [*argv, "--course", str(REPO)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-lab-grade: error:") and message in err
    assert (tmp_path / "mine" / "feedback" / "keep.txt").read_text() == "mine"


def test_empty_submissions_folder(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "notes.txt").write_text("no notebooks here")
    assert main(["1", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--course", str(REPO)]) == 2
    assert "no notebooks for lab01-attention found" in capsys.readouterr().err


def test_without_bubblewrap_grading_stops_unless_unsandboxed(tmp_path, capsys, monkeypatch):
    """No sandbox: a clear error (exit 3) and nothing written; --unsandboxed goes on (it then fails later
    here only because the folder holds no notebooks)."""
    monkeypatch.setattr(gpt_lab_grader.grade, "bwrap_problem", lambda: "bubblewrap is not installed")
    (tmp_path / "subs").mkdir()
    argv = ["1", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--course", str(REPO)]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "bubblewrap is not installed" in err and "--unsandboxed" in err
    assert not (tmp_path / "out").exists()
    assert main([*argv, "--unsandboxed"]) == 2
    assert "no notebooks for lab01-attention found" in capsys.readouterr().err


def test_bwrap_problem_names_what_is_missing(monkeypatch):
    confine.bwrap_problem.cache_clear()
    monkeypatch.setattr(confine.shutil, "which", lambda name: None)
    try:
        assert "bubblewrap is not installed" in confine.bwrap_problem()
    finally:
        confine.bwrap_problem.cache_clear()


def test_bwrap_command_hides_the_course_and_the_hidden_checks(tmp_path):
    """What the sandbox mounts: system and Python read-only, the workspace writable, the checks masked;
    never the repository root, solutions/ or tests/."""
    cmd = confine.bwrap_command(["python", "-c", "pass"], [tmp_path])
    pairs = {(cmd[i], cmd[i + 2]) for i in range(len(cmd) - 2) if cmd[i].startswith("--") and "bind" in cmd[i]}
    targets = {target for _, target in pairs}
    assert ("--bind", str(tmp_path.resolve())) in pairs
    for flag in ("--unshare-net", "--unshare-pid", "--die-with-parent"):
        assert flag in cmd
    assert str(REPO) not in targets and str(REPO / "solutions") not in targets and str(REPO / "tests") not in targets
    for check in REPO.glob("gpt_lab_grader/labs/*/checks.py"):
        assert ("--ro-bind", str(check)) in {(cmd[i], cmd[i + 2]) for i in range(len(cmd) - 2)}
        assert cmd[cmd.index(str(check)) - 1] == "/dev/null"


def test_roster_gives_everyone_a_row_and_only_regrades_one(tmp_path):
    """A roster: a student without a submission is "missing", LMS ids are kept; `--only` rewrites that row
    alone. (Only unreadable notebooks here, so no student code runs.)"""
    from gpt_lab_grader.report import read_grades_csv

    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "amy.ipynb").write_text('{"cells": [')
    roster = tmp_path / "class.csv"
    roster.write_text("Student,SIS Login ID,ID\nPoints Possible,,\n\"Liddell, Amy\",amy,11\n\"Doe, Bob\",bob,22\n")
    argv = ["1", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--course", str(REPO), "--roster", str(roster),
            "--no-progress"]
    assert main(argv) == 0
    table = read_grades_csv(tmp_path / "out" / "grades.csv")
    assert {s: (r["status"], r["lms_user_id"], r["total"]) for s, r in table.items()} == \
        {"amy": ("invalid", "11", "0"), "bob": ("missing", "22", "0")}
    before = (tmp_path / "out" / "grades.csv").read_bytes()
    page = (tmp_path / "out" / "feedback" / "amy.html").read_bytes()
    assert main([*argv, "--only", "bob"]) == 0
    assert (tmp_path / "out" / "grades.csv").read_bytes() == before
    assert (tmp_path / "out" / "feedback" / "amy.html").read_bytes() == page


def test_only_needs_an_earlier_run(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "amy.ipynb").write_text("{}")
    assert main(["1", str(tmp_path / "subs"), "--out", str(tmp_path / "out"), "--course", str(REPO), "--only", "amy"]) == 2
    assert "holds no earlier run" in capsys.readouterr().err

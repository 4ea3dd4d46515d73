"""`gpt-lab grade` refuses bad arguments with a clear message, before grading anything."""
import pytest

from gpt_lab.cli import main


@pytest.mark.parametrize("argv, message", [
    (["grade", "lab99", "{tmp}"], "unknown lab 'lab99'"),
    (["grade", "lab01", "{tmp}/nothing-here"], "neither a folder nor a .zip"),
    (["grade", "lab01", "{tmp}", "--out", "{tmp}/out"], "inside the submissions folder"),
    (["grade", "lab01", "{tmp}", "--jobs", "0"], "need jobs >= 1"),
    (["grade", "attention", "{tmp}/subs", "--out", "{tmp}/mine"], "gpt-lab grade did not write"),
])
def test_clear_errors(tmp_path, capsys, argv, message):
    (tmp_path / "subs").mkdir()
    (tmp_path / "mine" / "feedback").mkdir(parents=True)  # someone else's folder: never deleted
    (tmp_path / "mine" / "feedback" / "keep.txt").write_text("mine")
    assert main([a.replace("{tmp}", str(tmp_path)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpt-lab grade: error:") and message in err
    assert (tmp_path / "mine" / "feedback" / "keep.txt").read_text() == "mine"


def test_empty_submissions_folder(tmp_path, capsys):
    (tmp_path / "subs").mkdir()
    (tmp_path / "subs" / "notes.txt").write_text("no notebooks here")
    assert main(["grade", "1", str(tmp_path / "subs"), "--out", str(tmp_path / "out")]) == 2
    assert "no notebooks for lab01-attention found" in capsys.readouterr().err

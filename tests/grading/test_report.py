"""Grade rows, feedback pages and the distribution figure, from hand-made results."""
import pytest

from gpt_lab_grader.report import (StudentResult, feedback_html, plot_distribution, read_grades_csv,
                                    write_feedback, write_grades_csv)
from gpt_lab_grader.results import MANUAL, Result


def result(student, cells=(3, 0), checks=(1, 1, 0), status_notes=()):
    r = StudentResult(student, "lab01-attention", nbgrader_max=5.0, hidden_max=3.0)
    r.cells = [Result("test-sdpa", cells[0], 3, cells[0] == 3, "" if cells[0] == 3 else "AssertionError: wrong axes"),
               Result("test-heads", cells[1], 2, cells[1] == 2, "" if cells[1] == 2 else "NotImplementedError")]
    r.checks = [Result(f"test_check_{i}", p, 1, p == 1, "" if p else f"check {i} failed <b>badly</b>")
                for i, p in enumerate(checks)]
    for status, note in status_notes:
        r.flag(status, note)
    return r


def test_scores_status_precedence_and_zeroing():
    r = result("amy")
    assert (r.nbgrader_score, r.hidden_score, r.total, r.max) == (3, 2, 5, 8)
    r.flag("timeout", "a cell ran past the time limit")
    r.flag("ok", "changed locked cells were restored")
    assert r.status == "timeout"
    r.flag("rejected", "the notebook tried open tests/x (denied)")
    r.flag("crashed", "kernel died")  # less severe: the status stays rejected
    assert r.status == "rejected" and (r.nbgrader_score, r.hidden_score, r.total, r.max) == (0, 0, 0, 8)
    assert r.message == ("a cell ran past the time limit; changed locked cells were restored; the notebook tried "
                         "open tests/x (denied); kernel died; notebook tests failed: test-heads; "
                         "1 of 3 hidden checks failed")
    with pytest.raises(ValueError, match="unknown status"):
        r.flag("great", "")


def test_grades_csv_is_sorted_formatted_and_formula_safe(tmp_path):
    rows = [result("zed", cells=(3, 2), checks=(1, 1, 1)), result("=cmd|calc", status_notes=[("ok", "=1+1")]),
            result("amy")]
    rows[1].student = "=cmd|calc"  # ids are sanitised by collect; messages are not under our control
    path = write_grades_csv(rows, tmp_path / "grades.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == ("student,lab,nbgrader_score,hidden_score,total,max,manual_pending,manual_max,status,sandbox,"
                        "message,lms_user_id,late,"
                        "nb:test-sdpa,nb:test-heads,hidden:test_check_0,hidden:test_check_1,hidden:test_check_2")
    assert lines[2] == ("amy,lab01-attention,3,2,5,8,0,0,ok,bubblewrap,notebook tests failed: test-heads; 1 of 3 hidden "
                        "checks failed,,,3,0,1,1,0")
    table = read_grades_csv(path)
    assert list(table) == ["=cmd|calc", "amy", "zed"]
    assert table["zed"]["total"] == "8" and table["zed"]["message"] == "all tests and checks passed"
    assert table["amy"]["message"] == "notebook tests failed: test-heads; 1 of 3 hidden checks failed"
    assert table["=cmd|calc"]["message"].startswith("'=1+1")
    write_grades_csv(list(reversed(rows)), tmp_path / "again.csv")
    assert (tmp_path / "again.csv").read_bytes() == path.read_bytes()


def test_feedback_lists_every_part_and_escapes_text(tmp_path):
    r = result("amy", status_notes=[("ok", "<script>alert(1)</script>")])
    page = feedback_html(r)
    for name in ("test-sdpa", "test-heads", "test_check_0", "test_check_1", "test_check_2"):
        assert name in page
    assert "AssertionError: wrong axes" not in page  # passed cells show no message
    assert "NotImplementedError" in page and "check 2 failed &lt;b&gt;badly&lt;/b&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "5 / 8" in page and "3 / 5" in page and "2 / 3" in page
    assert write_feedback(r, tmp_path / "fb").read_text() == page


def test_distribution_figure(tmp_path):
    rows = [result(f"s{i}", cells=(3 * (i % 2), 2), checks=(1, i % 2, 0)) for i in range(7)]
    rows[0].flag("invalid", "not valid JSON")
    path = plot_distribution(rows, tmp_path / "dist.png", "lab01-attention")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    plot_distribution(rows, tmp_path / "again.png", "lab01-attention")
    assert (tmp_path / "again.png").read_bytes() == data


def test_missing_and_review_rows(tmp_path):
    """A student on the roster without a submission is "missing" (0); "review" keeps the points earned."""
    missing = StudentResult("bob", "lab01-attention", nbgrader_max=5.0, hidden_max=3.0, lms_user_id="4411")
    missing.flag("missing", "no submission")
    review = result("amy", status_notes=[("review", "`f` has the same syntax tree as gpt_lab.x")])
    review.late = "late"
    assert (missing.total, missing.counts, review.total, review.status) == (0, False, 5, "review")
    table = read_grades_csv(write_grades_csv([missing, review], tmp_path / "grades.csv"))
    assert (table["bob"]["status"], table["bob"]["lms_user_id"], table["bob"]["nb:test-sdpa"]) == ("missing", "4411", "")
    assert (table["amy"]["late"], table["amy"]["hidden:test_check_2"], table["amy"]["total"]) == ("late", "0", "5")


def test_written_answers_are_pending_not_zeros(tmp_path):
    """Hand-graded answers count in neither the autograded total nor its maximum: the row says how many points
    are still to be graded (an answer left blank scores 0 and is not pending), and so does the feedback."""
    r = result("amy", cells=(3, 2), checks=(1, 1, 1))
    r.manual_max = 6.0
    r.manual = [Result("q1", 0.0, 2, False, "to be graded by hand", MANUAL),
                Result("q2", 0.0, 2, False, "not answered: 0 points", ""),
                Result("q3", 0.0, 2, False, "to be graded by hand", MANUAL)]
    assert (r.total, r.max, r.manual_pending) == (8, 8, 4)
    row = read_grades_csv(write_grades_csv([r], tmp_path / "grades.csv"))["amy"]
    assert (row["total"], row["max"], row["manual_pending"], row["manual_max"]) == ("8", "8", "4", "6")
    assert row["message"] == ("written answers to grade by hand: q1, q3 (4 points pending); "
                              "written answers left blank (0): q2")
    page = feedback_html(r)
    assert "8 / 8" in page and "4 / 6 pending" in page and "Written answers" in page
    assert page.count("to be graded by hand") == 2 and "0 (not answered)" in page
    r.flag("rejected", "the notebook tried open tests/x (denied)")  # a row that scores 0 has nothing pending
    assert (r.total, r.manual_pending) == (0, 0)
    assert "written answers" not in r.message

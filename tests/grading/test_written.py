"""Written answers (nbgrader's hand-graded cells) on lab 8: the grader's course leaves them out of the
autograded points and maximum and reports them as points still to be graded by hand, per submission."""
import copy

import nbformat
import pytest
from grader import LABS, REPO, release, solution

from gpt_lab_grader.autograde import manual_cells, prepare_course, written_answers
from gpt_lab_grader.report import StudentResult, feedback_html, grade_row
from gpt_lab_grader.results import MANUAL

LAB = "lab08-tokenizer"
WRITTEN = {"q1": 2.0, "q2": 2.0, "q3": 2.0}


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """The lab's gradebook as `gpt-lab-grade` prepares it (nbgrader generate_assignment; no student code runs)."""
    spec = LABS[LAB]
    return prepare_course(LAB, spec.notebook(REPO), spec.release(REPO), tmp_path_factory.mktemp("course") / "c", REPO)


def test_written_answers_are_not_autograded_cells(course):
    assert manual_cells(solution(LAB)) == set(WRITTEN)
    assert course.manual == WRITTEN and not set(WRITTEN) & set(course.cells)
    assert course.cells == {"test-merge": 2.0, "test-encode": 2.0, "test-decode": 1.0, "test-train": 2.0}
    assert (course.max_points, course.manual_max) == (7.0, 6.0)  # nbgrader's own maximum is 13


def test_answered_written_answers_are_pending_blank_ones_score_zero(course, tmp_path):
    full = written_answers(course, solution(LAB))
    assert [(r.name, r.max_points, r.points, r.error) for r in full] == [(q, 2.0, 0.0, MANUAL) for q in WRITTEN]
    assert all(r.error == "" and r.message.startswith("not answered") for r in written_answers(course, release(LAB)))

    nb = nbformat.read(release(LAB), as_version=4)
    one = copy.deepcopy(nb)
    next(c for c in one.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "q2").source = "Because BPE..."
    one.cells = [c for c in one.cells if c.metadata.get("nbgrader", {}).get("grade_id") != "q3"]  # deleted: blank
    nbformat.write(one, tmp_path / "one.ipynb")
    answers = written_answers(course, tmp_path / "one.ipynb")
    assert {r.name: r.error for r in answers} == {"q1": "", "q2": MANUAL, "q3": ""}

    r = StudentResult("amy", LAB, course.max_points, 10.0, manual_max=course.manual_max, manual=answers)
    row = grade_row(r)
    assert (row["max"], row["manual_pending"], row["manual_max"]) == ("17", "2", "6")
    assert "written answers to grade by hand: q2 (2 points pending)" in row["message"]
    assert "2 / 6 pending" in feedback_html(r)
    (tmp_path / "bad.ipynb").write_text("{")  # unreadable: every answer counts as blank
    assert all(a.error == "" for a in written_answers(course, tmp_path / "bad.ipynb"))

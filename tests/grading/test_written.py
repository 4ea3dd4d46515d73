"""Written answers (nbgrader's hand-graded cells) on lab 8: the grader's course leaves them out of the
autograded points and maximum and reports them as points still to be graded by hand, per submission. Every lab
with written questions (labs 1-9) ends with three of them, each with rubric notes kept in solutions/."""
import copy

import nbformat
import pytest
from grader import LABS, REPO, nbgrader_max_points, release, solution

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


# Every lab with written questions: (its autograded points, unchanged by the questions).
AUTOGRADED = {"lab01-attention": 10.0, "lab02-masking": 10.0, "lab03-teacher-forcing": 10.0, "lab04-decoding": 13.0,
              "lab05-kv-cache": 10.0, "lab06-prompting": 8.0, "lab07-sft": 10.0, "lab08-tokenizer": 7.0,
              "lab09-assemble-gpt": 9.0}


def test_every_lab_has_written_questions():
    assert set(AUTOGRADED) == {lab for lab in LABS if solution(lab).exists()}


@pytest.mark.parametrize("lab", AUTOGRADED)
def test_each_lab_ends_with_three_written_questions_and_rubric_notes(lab):
    """q1..q3: a locked question cell, then a hand-graded markdown answer of 2 points whose source (solutions/)
    holds the model answer and the instructor's rubric, and whose release (labs/) is nbgrader's blank stub."""
    assert manual_cells(solution(lab)) == set(WRITTEN)
    source = {c.id: c for c in nbformat.read(solution(lab), as_version=4).cells}
    released = {c.id: c for c in nbformat.read(release(lab), as_version=4).cells}
    order = list(source)
    for q, points in WRITTEN.items():
        question, answer = source[f"{q}-text"], source[q]
        assert order.index(f"{q}-text") + 1 == order.index(q), f"{lab}: {q} should follow its question"
        assert question.metadata.nbgrader["locked"] and question.source.startswith(f"**Question {q[1]}.**")
        assert answer.cell_type == "markdown" and answer.metadata.nbgrader["points"] == points
        assert "**Model answer.**" in answer.source and f"**Rubric ({points:g} points).**" in answer.source
        assert released[q].source.strip() == "YOUR ANSWER HERE", f"{lab}: the rubric of {q} was released"
    assert order.index("q3") > max(order.index(c) for c in order if c.startswith("test-"))
    assert nbgrader_max_points(lab) == AUTOGRADED[lab]

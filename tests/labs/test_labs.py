"""The labs in both forms: labs/ is exactly nbgrader's release of solutions/, holds no answers, and
every hidden check passes on the solutions and fails on the released stubs; nbgrader's own
autograde gives a solution full marks and a stub zero.

Covers every lab registered in `gpt_lab_grader.labs.LABS` that has a solution notebook.
(`pytest --nbval-lax solutions` runs the solution notebooks themselves: see the Makefile's test target.)
"""
import json
import re
import shutil

import pytest

from grader import LABS, REPO, nbgrader_max_points, release, run_checks, solution, written_points

LAB_IDS = [lab for lab in LABS if solution(lab).exists()]
MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION", "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS")


def nbgrader_api(root):
    """nbgrader's Python API with the repository's nbgrader_config.py, for a course rooted at `root`."""
    from nbgrader.apps import NbGraderAPI
    from traitlets.config.loader import PyFileConfigLoader

    config = PyFileConfigLoader("nbgrader_config.py", path=str(REPO)).load_config()
    config.CourseDirectory.root = str(root)
    return NbGraderAPI(config=config)


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A scratch course: solutions/ copied, every lab released with nbgrader (its gradebook inside)."""
    root = tmp_path_factory.mktemp("course")
    for lab in LAB_IDS:
        shutil.copytree(REPO / "solutions" / lab, root / "solutions" / lab,
                        ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    api = nbgrader_api(root)
    for lab in LAB_IDS:
        result = api.generate_assignment(lab, force=True, create=True)
        assert result["success"], result.get("error") or result.get("log")
    return root, api


def cells(path):
    return json.loads(path.read_text())["cells"]


def source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


@pytest.mark.parametrize("lab", LAB_IDS)
def test_labs_folder_is_nbgrader_release_of_solutions(course, lab):
    """labs/ must be regenerated (`make labs`) whenever solutions/ changes."""
    root, _ = course
    fresh, committed = root / "labs" / lab, REPO / "labs" / lab
    assert committed.is_dir(), f"labs/{lab} is missing: run `make labs`"
    assert sorted(p.name for p in fresh.iterdir()) == sorted(p.name for p in committed.iterdir())
    for path in fresh.glob("*.ipynb"):
        assert json.loads(path.read_text()) == json.loads((committed / path.name).read_text()), \
            f"labs/{lab}/{path.name} is stale: run `make labs`"


@pytest.mark.parametrize("lab", LAB_IDS)
def test_release_has_no_answers_hidden_tests_or_outputs(lab):
    released = cells(release(lab))
    answers = {cell["id"]: source(cell) for cell in cells(solution(lab))
               if cell.get("metadata", {}).get("nbgrader", {}).get("solution")}
    assert answers, f"{lab} has no graded solution cells"
    for cell in released:
        text = source(cell)
        assert not any(marker in text for marker in MARKERS), f"{lab}: a solution/hidden-test marker was released"
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None, f"{lab}: outputs were released"
        if cell["id"] in answers and cell["cell_type"] == "markdown":  # a written answer, graded by hand
            assert text.strip() == "YOUR ANSWER HERE", f"{lab}: the answer of {cell['id']} was released"
            continue
        if cell["id"] in answers:
            assert "raise NotImplementedError()" in text
            answer = re.search(r"### BEGIN SOLUTION\n(.*?)### END SOLUTION", answers[cell["id"]], re.S)
            answer_lines = [line.strip() for line in answer.group(1).splitlines() if len(line.strip()) > 12]
            assert not any(line in text for line in answer_lines), f"{lab}: answer code in cell {cell['id']}"
    hidden = sum("### BEGIN HIDDEN TESTS" in source(c) for c in cells(solution(lab)))
    assert hidden > 0, f"{lab}: the source has no hidden tests"


@pytest.mark.parametrize("lab", LAB_IDS)
def test_hidden_checks_pass_on_the_solution(lab):
    results = run_checks(lab, solution(lab), timeout_s=300)
    assert len(results) >= 8
    failed = [f"{r.name}: {r.message}" for r in results if not r.passed]
    assert not failed, "\n".join(failed)
    assert all(r.points == r.max_points > 0 for r in results)


@pytest.mark.parametrize("lab", LAB_IDS)
def test_every_hidden_check_fails_on_the_released_stub(lab):
    results = run_checks(lab, release(lab), timeout_s=300)
    passed = [r.name for r in results if r.passed]
    assert not passed, f"checks that pass on the empty stubs (they test nothing): {passed}"
    assert all(r.points == 0 and r.message for r in results)
    assert all(r.error in ("StudentError", "") for r in results), {r.error for r in results}


@pytest.mark.filterwarnings("ignore:Object of type")  # nbgrader's own SQLAlchemy warnings
@pytest.mark.parametrize("lab", LAB_IDS)
def test_nbgrader_autograde_full_marks_for_solution_zero_for_stub(course, lab):
    from nbgrader.api import Gradebook

    root, api = course
    for student, notebook in (("solution", solution(lab)), ("stub", release(lab))):
        target = root / "submitted" / student / lab
        target.mkdir(parents=True)
        shutil.copyfile(notebook, target / f"{lab}.ipynb")
        result = api.autograde(lab, student, force=True, create=True)
        assert result["success"], result.get("error") or result.get("log")
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course_id="gpt-from-scratch") as gb:
        full, stub = gb.find_submission(lab, "solution"), gb.find_submission(lab, "stub")
        written = written_points(lab)  # the written answers: in nbgrader's maximum, graded by hand
        assert nbgrader_max_points(lab) > 0 and full.max_score == nbgrader_max_points(lab) + written
        assert full.score == full.max_score - written, f"the solution scores {full.score}/{full.max_score}"
        assert stub.score == 0

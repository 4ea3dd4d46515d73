"""The one seam between this repository's tests and the instructors' grader (`gpt_lab_grader`).

The grader finds its course from an argument; here the course is this repository. Tests reach the lab
registry, a lab's notebooks and the hidden checks only through these names.
"""
from __future__ import annotations

import json
from pathlib import Path

from gpt_lab_grader import checks as _checks
from gpt_lab_grader.autograde import manual_cells as _manual_cells
from gpt_lab_grader.labs import LABS, LabSpec, resolve_lab  # noqa: F401 (re-exported)
from gpt_lab_grader.results import Result

REPO = Path(__file__).resolve().parents[1]


def solution(lab: str) -> Path:
    """The lab's nbgrader source notebook in this repository."""
    return LABS[resolve_lab(lab)].notebook(REPO)


def release(lab: str) -> Path:
    """The lab's student notebook (labs/) in this repository."""
    return LABS[resolve_lab(lab)].release(REPO)


def nbgrader_max_points(lab: str) -> float:
    """Points of the lab's autograded test cells: nbgrader's maximum less the written answers, graded by
    hand (`LabSpec.nbgrader_max_points` counts every graded cell), as the grader's `max` column counts."""
    return LABS[resolve_lab(lab)].nbgrader_max_points(REPO) - written_points(lab)


def written_points(lab: str) -> float:
    """Points of the lab's written answers (nbgrader's hand-graded cells), which no test scores."""
    cells = json.loads(solution(lab).read_text())["cells"]
    manual = _manual_cells(solution(lab))
    return float(sum(c["metadata"]["nbgrader"].get("points", 0) for c in cells
                     if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") in manual))


def run_checks(lab: str, notebook: str | Path, **kwargs) -> list[Result]:
    """The lab's hidden checks on `notebook`, with this repository as the course."""
    return _checks.run_checks(lab, notebook, course=REPO, **kwargs)


def collect_checks(lab: str) -> tuple[tuple[str, float], ...]:
    """(name, points) of the lab's hidden checks."""
    return _checks.collect_checks(lab)

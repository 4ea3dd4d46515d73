"""The lab registry and run_checks' contract (the hostile cases run in test_sandbox.py)."""
import importlib
import json
import os

import pytest

from grader import LABS, Result, collect_checks, nbgrader_max_points, release, resolve_lab, run_checks, solution

from gpt_lab_grader.submission import SubmissionError


@pytest.mark.parametrize("name", ["lab01-attention", "lab01", "1", "01", "attention", "lab01-attention/"])
def test_resolve_lab(name):
    assert resolve_lab(name) == "lab01-attention"


def test_resolve_unknown_lab():
    with pytest.raises(ValueError, match="unknown lab 'lab99'"):
        resolve_lab("lab99")


@pytest.mark.parametrize("lab", list(LABS))
def test_registry_targets_exist(lab):
    """Every reference and forbidden callable resolves (a rename in gpt_lab must update LABS)."""
    spec = LABS[lab]
    assert spec.check_file.exists() and set(spec.references) <= set(spec.graded)
    for target in [*spec.references.values(), *spec.forbidden]:
        module, _, attr = target.partition(":")
        owner = importlib.import_module(module)
        for part in attr.split("."):
            owner = getattr(owner, part)
        assert callable(owner), target
    importlib.import_module(spec.scenario_module)


def test_unreadable_notebook_raises_submission_error(tmp_path):
    bad = tmp_path / "broken.ipynb"
    bad.write_text('{"cells": [')
    with pytest.raises(SubmissionError, match="not valid JSON"):
        run_checks("lab01", bad)


def test_collect_checks_and_points():
    checks = collect_checks("lab02-masking")
    names = [name for name, _ in checks]
    assert "test_padded_batch_inside_gpt[left]" in names and len(names) == len(set(names))
    assert LABS["lab02-masking"].hidden_max_points == sum(points for _, points in checks) > len(checks)
    assert nbgrader_max_points("lab02-masking") == 10


def test_result_is_json_friendly():
    result = Result("test_x", 0.0, 2.0, False, "wrong", "StudentError")
    assert result.to_dict() == {"name": "test_x", "points": 0.0, "max_points": 2.0, "passed": False,
                                "message": "wrong", "error": "StudentError"}
    assert Result.from_dict(result.to_dict()) == result


def test_in_process_checks_give_the_same_results_and_leave_the_environment(tmp_path):
    """run_checks(in_process=True), as the mutation tests grade, gives what a fresh pytest process gives, on a
    notebook with one function right and the rest stubs, and leaves os.environ as it found it."""
    nb = json.loads(release("lab02").read_text())
    answers = {c["metadata"]["nbgrader"]["grade_id"]: c["source"] for c in json.loads(solution("lab02").read_text())["cells"]
               if c.get("metadata", {}).get("nbgrader", {}).get("solution")}
    first = next(iter(answers))
    for cell in nb["cells"]:
        if cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == first:
            cell["source"] = answers[first]
    path = tmp_path / "half.ipynb"
    path.write_text(json.dumps(nb))
    environ = dict(os.environ)
    inside = run_checks("lab02", path, in_process=True)
    assert dict(os.environ) == environ
    outside = run_checks("lab02", path)
    assert [(r.name, r.points, r.passed) for r in inside] == [(r.name, r.points, r.passed) for r in outside]
    assert 0 < sum(r.points for r in inside) < sum(r.max_points for r in inside)

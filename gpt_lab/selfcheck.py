"""`gpt-lab check NOTEBOOK`: a student's self-check of a lab notebook.

Runs the whole notebook in a fresh Jupyter kernel (in the notebook's folder, as Jupyter would) and reports
every visible test cell (an nbgrader cell marked for grading) as passed or failed, with the error's name and
message. Unlike `nbgrader validate`, the exit status says whether everything passed (0) or not (1). It runs
only the tests that are in the notebook: the grader's hidden checks are not part of the course release.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class TestCell:
    """One visible test cell of a notebook, after running it."""

    name: str
    points: float
    passed: bool
    message: str = ""


def _error(cell) -> str:
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            evalue = ANSI.sub("", str(out.get("evalue", ""))).strip()
            return f"{out.get('ename', 'Error')}: {evalue}" if evalue else f"{out.get('ename', 'Error')} (no message)"
    return ""


def run_visible_tests(notebook: str | os.PathLike, timeout_s: int = 600,
                      kernel_name: str | None = None) -> tuple[list[TestCell], list[str]]:
    """Run `notebook` in a fresh kernel: (its test cells with results, notes on other cells that failed).

    Raises FileNotFoundError or ValueError when the notebook cannot be read.
    """
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    path = Path(notebook)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # noqa: BLE001 - nbformat raises several kinds
        raise ValueError(f"{path} is not a readable Jupyter notebook ({exc})") from None
    name = kernel_name or nb.metadata.get("kernelspec", {}).get("name") or "python3"
    client = NotebookClient(nb, timeout=timeout_s, kernel_name=name, allow_errors=True,
                            resources={"metadata": {"path": str(path.resolve().parent)}})
    notes = []
    try:
        client.execute()
    except CellTimeoutError:
        notes.append(f"a cell ran longer than {timeout_s} s and was stopped; the cells after it did not run")
    except DeadKernelError:
        notes.append("the kernel died (a crash, os._exit or out of memory); the cells after it did not run")
    tests = []
    for index, cell in enumerate(nb.cells, start=1):
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if cell.cell_type != "code":
            continue
        error = _error(cell)
        ran = cell.get("execution_count") is not None
        if meta.get("grade") and not meta.get("solution"):
            message = error or ("" if ran else "not run (an earlier cell stopped the notebook)")
            tests.append(TestCell(meta.get("grade_id", f"cell {index}"), float(meta.get("points", 0)),
                                  ran and not error, message))
        elif error and "NotImplementedError" not in error:
            notes.append(f"cell {index} ({meta.get('grade_id', 'not a test')}) raised {error}")
    return tests, notes


def check(notebook: str | os.PathLike, timeout_s: int = 600, kernel_name: str | None = None) -> int:
    """Print each visible test's result; 0 if all passed, 1 if any failed (or the notebook has none)."""
    tests, notes = run_visible_tests(notebook, timeout_s, kernel_name)
    width = max((len(t.name) for t in tests), default=0)
    for t in tests:
        line = f"{'PASS' if t.passed else 'FAIL'}  {t.name:<{width}}  ({t.points:g} points)"
        print(line + (f"\n      {t.message}" if t.message else ""))
    for note in notes:
        print(f"note: {note}")
    passed = sum(t.passed for t in tests)
    got = sum(t.points for t in tests if t.passed)
    print(f"\n{passed} of {len(tests)} visible tests passed ({got:g} of {sum(t.points for t in tests):g} points). "
          "The grader also runs hidden checks on new inputs.")
    if not tests:
        print("this notebook has no visible test cells (is it a lab notebook?)")
    return 0 if tests and passed == len(tests) else 1

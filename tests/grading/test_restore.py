"""Putting back deleted or renamed nbgrader cells before autograde (nbgrader's own option crashes on these)."""
import nbformat

from gpt_lab_grader.autograde import restore_missing_cells


def cell(grade_id, source, kind="code", **flags):
    meta = {"nbgrader": {"grade_id": grade_id, "solution": False, "grade": False, "locked": False, **flags}}
    make = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata=meta) if grade_id else make(source)


def ids(nb):
    return [c.metadata.get("nbgrader", {}).get("grade_id", "-") for c in nb.cells]


def released():
    nb = nbformat.v4.new_notebook()
    nb.cells = [cell("intro", "# Lab", "markdown", locked=True), cell(None, "import torch"),
                cell("f", "def f():\n    raise NotImplementedError()", solution=True),
                cell("test-f", "assert f() == 1", grade=True, locked=True, points=2),
                cell("g-text", "## g", "markdown", locked=True),
                cell("g", "def g():\n    raise NotImplementedError()", solution=True),
                cell("test-g", "assert g() == 2", grade=True, locked=True, points=1)]
    return nb


def roundtrip(tmp_path, nb):
    ref, sub = tmp_path / "released.ipynb", tmp_path / "submitted.ipynb"
    nbformat.write(released(), ref)
    nbformat.write(nb, sub)
    restored = restore_missing_cells(sub, ref)
    return restored, nbformat.read(sub, as_version=4)


def test_untouched_notebook_is_unchanged(tmp_path):
    restored, nb = roundtrip(tmp_path, released())
    assert restored == [] and ids(nb) == ids(released())


def test_deleted_solution_and_test_cells_come_back_in_place(tmp_path):
    nb = released()
    nb.cells = [c for c in nb.cells if ids_of(c) not in ("g-text", "g", "test-g")]
    nb.cells.append(nbformat.v4.new_code_cell("print('my own cell')"))
    restored, nb = roundtrip(tmp_path, nb)
    assert restored == ["g-text", "g", "test-g"]
    assert ids(nb) == ["intro", "-", "f", "test-f", "g-text", "g", "test-g", "-"]
    assert nb.cells[6].source == "assert g() == 2"


def test_renamed_and_duplicated_ids_become_plain_cells(tmp_path):
    nb = released()
    nb.cells[3].metadata.nbgrader["grade_id"] = "my-test"  # renamed test cell
    nb.cells.insert(6, cell("g", "def g():\n    return 2", solution=True))  # a second cell with g's id
    nb.cells.append(nbformat.v4.new_code_cell("x = 1", metadata={"nbgrader": {"grade": True}}))  # no id at all
    restored, nb = roundtrip(tmp_path, nb)
    assert restored == ["test-f"]
    assert ids(nb) == ["intro", "-", "f", "test-f", "-", "g-text", "g", "-", "test-g", "-"]
    assert nb.cells[4].source == "assert f() == 1" and "nbgrader" not in nb.cells[4].metadata
    assert nb.cells[7].source == "def g():\n    return 2"


def ids_of(c):
    return c.metadata.get("nbgrader", {}).get("grade_id")

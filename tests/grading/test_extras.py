"""An instructor installs `.[grade]`: every third-party module the grader and the hidden checks import must come
with it (the core dependencies or the `grade` extra), not only with the `test` extra; and the extras agree with
constraints.txt."""
import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest
from grader import REPO

tomllib = pytest.importorskip("tomllib")


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported(path: Path) -> set[str]:
    """Top-level modules a file imports, `pytest.importorskip("x")` included."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "importorskip" and node.args
              and isinstance(node.args[0], ast.Constant)):
            found.add(node.args[0].value.split(".")[0])
    return found


def test_grade_extra_brings_what_the_grader_and_hidden_checks_import():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    installed = {_name(r) for r in project["dependencies"] + project["optional-dependencies"]["grade"]}
    distributions = importlib.metadata.packages_distributions()
    modules = set().union(*(_imported(p) for p in (REPO / "gpt_lab_grader").rglob("*.py")))
    third_party = sorted(m for m in modules - set(sys.stdlib_module_names) - {"gpt_lab", "gpt_lab_grader", "__future__"})
    assert {"pytest", "hypothesis", "transformers", "nbgrader"} <= set(third_party)
    closure = _with_requirements(installed)
    missing = {m: sorted(d) for m in third_party
               if not (d := {_name(x) for x in distributions.get(m, [m])}) & closure}
    assert not missing, f"imported by gpt_lab_grader but not installed by `.[grade]`: {missing}"


def _with_requirements(names: set[str]) -> set[str]:
    """`names` and everything they require, transitively (extras of theirs left out), as installed here."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        todo += [_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_extras_are_pinned_by_constraints():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    pinned = {_name(line) for line in (REPO / "constraints.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    for extra, requirements in project["optional-dependencies"].items():
        assert {_name(r) for r in requirements} <= pinned, f"extra {extra!r} has unpinned requirements"

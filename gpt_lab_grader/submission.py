"""Read a submitted notebook and pull out the code of its graded definitions, without running any of it.

A lab notebook mixes definitions (the graded functions) with code that *uses* them (plots, training
runs). The checker needs only the former, so it keeps, from every code cell, the top-level
statements that define things: imports, `def`, `class`, and assignments of constant-like values
(`IGNORE_INDEX = -100`, `DTYPE = torch.float32`). Calls, loops and other statements are skipped,
so a long training run in a notebook never runs during grading.
"""
from __future__ import annotations

import ast
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


class SubmissionError(Exception):
    """The notebook as a whole cannot be used: missing, not JSON, or not a Jupyter notebook."""


@dataclass
class Extraction:
    """The definitions kept from a notebook.

    cells: (code cell index, cell code, module of the kept statements at their original line numbers);
    found: graded name -> index of the code cell that defines it (the last definition wins);
    missing: graded name -> student-facing reason it is missing;
    skipped: one line per skipped top-level statement or unparsable cell.
    """

    cells: list[tuple[int, str, ast.Module]] = field(default_factory=list)
    found: dict[str, int] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @property
    def source(self) -> str:
        """The kept code as one script (for reading; the sandbox compiles `cells`)."""
        return "\n\n".join(f"# cell {index}\n{ast.unparse(tree)}" for index, _, tree in self.cells)


def read_notebook(path: str | os.PathLike) -> dict:
    """Load an nbformat-4 notebook as plain JSON, with a `SubmissionError` that says what is wrong with it.

    (Plain `json`, not nbformat: importing nbformat's schema validation costs seconds per process.)
    """
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"no notebook at {path.name}: the file is missing")
    try:
        raw = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SubmissionError(f"{path.name} cannot be read as UTF-8 text ({exc})") from exc
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise SubmissionError(f"{path.name} is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                              "was it saved by Jupyter?") from exc
    if not isinstance(data, dict) or not isinstance(data.get("cells"), list):
        raise SubmissionError(f"{path.name} is JSON but not a Jupyter notebook (no list of 'cells')")
    if data.get("nbformat") != 4:
        raise SubmissionError(f"{path.name} has nbformat {data.get('nbformat')!r}; expected a version 4 notebook")
    for index, cell in enumerate(data["cells"]):
        source = cell.get("source", "") if isinstance(cell, dict) else None
        if not (isinstance(source, str) or (isinstance(source, list) and all(isinstance(x, str) for x in source))):
            raise SubmissionError(f"{path.name} is not a valid notebook: cell {index} is malformed")
    return data


def _cell_source(cell) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def strip_magics(code: str) -> str:
    """Comment out IPython-only lines (`%magic`, `%%cell magic`, `!shell`) so the rest parses as Python."""
    lines = code.splitlines()
    return "\n".join("# " + line if line.lstrip().startswith(("%", "!")) else line for line in lines)


def _constant_like(node: ast.AST) -> bool:
    """Literals, names, attributes, and containers/arithmetic of those: cheap, no calls."""
    if isinstance(node, (ast.Constant, ast.Name)):
        return True
    if isinstance(node, ast.Attribute):
        return _constant_like(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_constant_like(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is None or _constant_like(k) for k in node.keys) and all(_constant_like(v) for v in node.values)
    if isinstance(node, ast.UnaryOp):
        return _constant_like(node.operand)
    if isinstance(node, ast.BinOp):  # no `**`: 10 ** 10 ** 10 would hang the grader
        return not isinstance(node.op, ast.Pow) and _constant_like(node.left) and _constant_like(node.right)
    return False


def _defined_names(stmt: ast.stmt) -> list[str]:
    if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [stmt.name]
    if isinstance(stmt, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in stmt.names]
    targets = stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target]
    return [n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)]


def _keep(stmt: ast.stmt) -> bool:
    if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return True
    if isinstance(stmt, ast.Assign):
        return all(isinstance(t, (ast.Name, ast.Tuple)) for t in stmt.targets) and _constant_like(stmt.value)
    if isinstance(stmt, ast.AnnAssign):
        return isinstance(stmt.target, ast.Name) and stmt.value is not None and _constant_like(stmt.value)
    return False


def extract_definitions(notebook: dict | str | os.PathLike, names: Iterable[str]) -> Extraction:
    """Keep the defining top-level statements of every code cell; report which graded `names` are defined."""
    nb = notebook if isinstance(notebook, dict) else read_notebook(notebook)
    names = list(names)
    out = Extraction()
    broken: list[str] = []
    for index, cell in enumerate(nb["cells"]):
        if cell.get("cell_type") != "code":
            continue
        code = strip_magics(_cell_source(cell))
        try:
            tree = ast.parse(code, filename=f"<cell {index}>")
        except SyntaxError as exc:
            why = f"cell {index + 1} has a syntax error (line {exc.lineno}: {exc.msg})"
            out.skipped.append(why)
            broken.append(why)
            continue
        kept = []
        for stmt in tree.body:
            if not _keep(stmt):
                out.skipped.append(f"cell {index + 1}, line {stmt.lineno}: {type(stmt).__name__} (not a definition)")
                continue
            kept.append(stmt)
            for name in _defined_names(stmt):
                if name in names:
                    out.found[name] = index
        if kept:  # statements keep their line numbers, so tracebacks point into the cell
            out.cells.append((index, code, ast.Module(body=kept, type_ignores=[])))
    for name in names:
        if name not in out.found:
            hint = f"; note that {broken[0]}" if broken else ""
            out.missing[name] = (f"`{name}` is not defined in the notebook: was its cell deleted, or the function "
                                 f"renamed? Keep the name and signature given in the lab{hint}")
    return out

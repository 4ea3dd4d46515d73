"""`make release DEST=...`: the repository students get.

    python -m gpt_lab_grader.release DEST [--course DIR]

Copies from the course folder: the book sources (`_config.yml`, `_toc.yml`, `book/`), `labs/` (the student
notebooks nbgrader generated), the `gpt_lab` package and `constraints.txt`; writes a students' README and a
`pyproject.toml` that installs `gpt_lab` alone (no grader, no `gpt-lab-grade`, no `grade` extra). Nothing of
`solutions/`, `tests/` (hidden checks), `gpt_lab_grader/`, `benchmarks/` or the grading outputs is copied.
`check_release` verifies the result; `write_release` refuses to write into a non-empty folder.
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
from pathlib import Path

from gpt_lab_grader.course import find_course

COPIED = ("_config.yml", "_toc.yml", "book", "labs", "gpt_lab", "constraints.txt")
IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", "_build", "*.egg-info")
SECRET_MARKERS = ("### BEGIN SOLUTION", "### BEGIN HIDDEN TESTS", "gpt_lab_grader")

README = """# GPT from scratch: the course (students' copy)

This folder holds the book's sources (`book/`), the lab notebooks (`labs/`) and the course library
`gpt_lab`, which every chapter and lab imports.

## Set up

    python3 -m venv .venv
    .venv/bin/pip install torch
    .venv/bin/pip install -c constraints.txt -e ".[book]"

## Work on a lab

Open `labs/labNN-topic/labNN-topic.ipynb` in Jupyter, fill in the functions marked `YOUR CODE HERE`
(keep their names and signatures), and run the test cells under them. To check the whole notebook at once,
in a fresh kernel, run

    .venv/bin/gpt-lab check labs/lab01-attention/lab01-attention.ipynb

It prints every visible test with its result and message, and exits with status 1 if any fails. Submit the
notebook itself. The grader runs these tests again, plus hidden checks on new inputs (other shapes, batch
sizes, dtypes, edge cases, and your functions inside the real GPT); calling `gpt_lab`'s own implementation of
a function you are asked to write scores nothing for that function.

## Build the book

    .venv/bin/jupyter-book build .
"""


def _student_pyproject(text: str) -> str:
    """The course's pyproject.toml with the grader taken out: package list, console script, `grade` extra."""
    text = re.sub(r'include = \[[^\]]*\]', 'include = ["gpt_lab", "gpt_lab.*"]', text)
    text = re.sub(r'^gpt-lab-grade = .*\n', "", text, flags=re.M)
    text = re.sub(r'^grade = \[[^\]]*\]\n', "", text, flags=re.M | re.S)
    return text.replace(" and, for instructors, its grader", "")


def write_release(dest: str | Path, course: str | Path | None = None) -> Path:
    """Write the students' repository to `dest` (new or empty folder) from the course folder `course`."""
    root = find_course(course)
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise ValueError(f"{dest} is not empty: choose a new folder for the release")
    if dest == root or root in dest.parents:
        raise ValueError(f"{dest} is inside the course folder {root}: choose a folder outside it")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=IGNORED)
        elif src.is_file():
            shutil.copy2(src, dest / name)
    (dest / "README.md").write_text(README)
    (dest / "pyproject.toml").write_text(_student_pyproject((root / "pyproject.toml").read_text()))
    problems = check_release(dest)
    if problems:
        raise RuntimeError("the release would leak instructor material:\n" + "\n".join(problems))
    return dest


def check_release(dest: str | Path) -> list[str]:
    """What in `dest` must not reach students: solutions, hidden tests, grader code (empty list if nothing)."""
    dest = Path(dest)
    problems = [f"{name}/ is in the release" for name in ("solutions", "tests", "gpt_lab_grader", "benchmarks")
                if (dest / name).exists()]
    for path in dest.rglob("*"):
        if path.is_file() and path.suffix in (".py", ".ipynb", ".md", ".toml", ".yml", ".txt", ".cfg"):
            text = path.read_text(errors="replace")
            problems += [f"{path.relative_to(dest)} contains {marker!r}" for marker in SECRET_MARKERS
                         if marker in text and path.name != "README.md" and not path.match("book/instructors.md")]
    return problems


def main(argv: list[str] | None = None) -> int:
    """`python -m gpt_lab_grader.release DEST [--course DIR]`."""
    parser = argparse.ArgumentParser(prog="python -m gpt_lab_grader.release", description=__doc__.splitlines()[0])
    parser.add_argument("dest", help="new or empty folder for the students' repository")
    parser.add_argument("--course", default=None, help="the course folder (default: the current directory)")
    args = parser.parse_args(argv)
    try:
        dest = write_release(args.dest, args.course)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"release: error: {exc}", file=sys.stderr)
        return 2
    print(f"students' repository written to {dest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

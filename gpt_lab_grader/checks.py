"""Running a lab's hidden checks on one notebook.

`run_checks` runs the lab's hidden pytest file (`gpt_lab_grader/labs/<lab>/checks.py`) in a separate
pytest process against one notebook and returns one `Result` per check; the student's code itself runs
one level further down, in the sandbox (see `sandbox.py`), which the pytest process reaches only through
the `student` fixture of `gpt_lab_grader/labs/adapters.py`.

    python -m gpt_lab_grader.checks lab01 my_notebook.ipynb [--course DIR] [--json results.json]
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn
from unittest import mock

from gpt_lab_grader.confine import WALL_FACTOR
from gpt_lab_grader.labs import LABS, resolve_lab
from gpt_lab_grader.results import Result
from gpt_lab_grader.sandbox import SandboxError
from gpt_lab_grader.submission import read_notebook

PACKAGE_ROOT = Path(__file__).resolve().parent


def run_checks(lab: str, notebook: str | os.PathLike, timeout_s: float = 120, memory_mb: int = 4096,
               deny: Sequence[str | os.PathLike] = (), course: str | os.PathLike | None = None,
               sandboxed: bool = True, wall_factor: float = WALL_FACTOR, in_process: bool = False) -> list[Result]:
    """Run the hidden checks of `lab` against `notebook`; one result per check, in file order.

    `timeout_s`: CPU seconds of student code for the whole run (each call gets at most the lab's per-call
    limit, in CPU seconds too); checks left when it is spent fail ("not run"). Wall-clock time is only a
    backstop, `wall_factor` times as long, so a loaded machine gives the same grades.
    `deny`: more paths the student's code may not touch (other students' folders, a gradebook).
    `course`: the course folder (its solutions/ and tests/ are named to the audit hook).
    `sandboxed=False`: the student's code runs without bubblewrap (only the audit hook).
    `in_process=True`: pytest runs the checks in this process instead of a fresh one (the student's code still
    runs in the sandbox, under its limits): no interpreter and torch to start per notebook, 2-3 s, for a caller
    that grades many notebooks of its own (the mutation tests); there is then no wall-clock backstop around
    the checks themselves, only the sandbox's.
    Raises `SubmissionError` if the notebook cannot be read at all, RuntimeError if the check
    file itself is broken. Everything a submission does wrong becomes a failed check.
    """
    spec = LABS[resolve_lab(lab)]
    notebook = Path(notebook).resolve()
    read_notebook(notebook)
    with tempfile.TemporaryDirectory(prefix="gpt_lab_checks_") as tmp:
        results_path = Path(tmp) / "results.jsonl"
        settings = dict(GPT_LAB_SUBMISSION=str(notebook), GPT_LAB_MEMORY_MB=str(int(memory_mb)),
                        GPT_LAB_CALL_TIMEOUT=str(min(spec.call_timeout_s, timeout_s)),
                        GPT_LAB_DEADLINE=str(time.time() + wall_factor * timeout_s), GPT_LAB_CPU_BUDGET=str(timeout_s),
                        GPT_LAB_WALL_FACTOR=str(wall_factor), GPT_LAB_RESULTS=str(results_path),
                        GPT_LAB_DENY=os.pathsep.join(str(Path(p).resolve()) for p in deny),
                        GPT_LAB_COURSE=str(Path(course).resolve()) if course else "",
                        GPT_LAB_SANDBOXED="1" if sandboxed else "0",
                        PYTEST_DISABLE_PLUGIN_AUTOLOAD="1")  # third-party plugins (nbval: nbformat) cost seconds
        if in_process:
            with mock.patch.dict(os.environ, settings):
                status = _run_pytest(str(spec.check_file))
            return _read_results(results_path, status, "", wall_factor * timeout_s)
        env = dict(os.environ, **settings, PYTHONDONTWRITEBYTECODE="1",
                   OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # tiny tensors: threads only spin (and --jobs runs many)
        cmd = [sys.executable, "-c", "import sys; from gpt_lab_grader.checks import _worker; _worker(sys.argv[1])",
               str(spec.check_file)]
        proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=wall_factor * timeout_s + 60)  # the checks stop themselves
            status = proc.returncode
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
            status = None
        return _read_results(results_path, status, output.decode(errors="replace"), wall_factor * timeout_s)


def _read_results(path: Path, status: int | None, output: str, timeout_s: float) -> list[Result]:
    lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    collected = next((line["collected"] for line in lines if "collected" in line), None)
    if collected is None or (status not in (0, 1) and not collected):
        raise RuntimeError(f"the hidden checks could not be collected (pytest exit status {status}):\n{output[-3000:]}")
    outcomes = {line["nodeid"]: line for line in lines if "outcome" in line}
    if status is None:
        why = f"not run: the {timeout_s:g} s time limit for all checks ran out"
    else:
        why = f"not run: the checker stopped early (pytest exit status {status})"
    results = []
    for item in collected:
        done = outcomes.get(item["nodeid"])
        passed = bool(done and done["outcome"] == "passed")
        message = "" if passed else (done["message"] if done else why)
        error = "" if passed else (done.get("error", "") if done else "NotRun")
        results.append(Result(item["name"], item["points"] if passed else 0.0, item["points"], passed, message,
                                   error))
    return results


@functools.lru_cache(maxsize=None)
def collect_checks(lab: str) -> tuple[tuple[str, float], ...]:
    """(name, points) of every hidden check of `lab`, in file order, without running any."""
    spec = LABS[resolve_lab(lab)]
    with tempfile.TemporaryDirectory(prefix="gpt_lab_collect_") as tmp:
        path = Path(tmp) / "results.jsonl"
        env = dict(os.environ, GPT_LAB_RESULTS=str(path), PYTEST_DISABLE_PLUGIN_AUTOLOAD="1",
                   PYTHONDONTWRITEBYTECODE="1")
        cmd = [sys.executable, "-c", "import sys; from gpt_lab_grader.checks import _worker; "
               "_worker(sys.argv[1], collect_only=True)", str(spec.check_file)]
        proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
        lines = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        collected = next((line["collected"] for line in lines if "collected" in line), None)
        if proc.returncode != 0 or not collected:
            raise RuntimeError(f"the hidden checks of {spec.lab} could not be collected:\n{proc.stdout[-3000:]}")
        return tuple((item["name"], item["points"]) for item in collected)


# ---------------------------------------------------------------------------------------------
# The pytest side: a plugin that writes one JSON line per collected check and per result.


def _first_line(text: str | None) -> str:
    return (text or "").strip().splitlines()[0].strip() if (text or "").strip() else ""


class ResultWriter:
    """pytest plugin: appends JSON lines to `path` (collection first, then each outcome as it happens)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def _write(self, record: dict) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def pytest_collection_modifyitems(self, items) -> None:
        collected = []
        for item in items:
            marker = item.get_closest_marker("points")
            points = float(marker.args[0]) if marker and marker.args else 1.0
            collected.append({"nodeid": item.nodeid, "name": item.nodeid.split("::", 1)[-1], "points": points})
        self._write({"collected": collected})

    def pytest_runtest_makereport(self, item, call):
        if call.excinfo is None or call.when == "teardown":
            if call.when == "call" and call.excinfo is None:
                self._write({"nodeid": item.nodeid, "outcome": "passed"})
            return
        exc = call.excinfo.value
        error = type(exc).__name__ if isinstance(exc, SandboxError) and type(exc) is not SandboxError else ""
        if call.excinfo.errisinstance(AssertionError):
            detail = str(exc).strip()
        else:
            detail = f"{type(exc).__name__}: {exc}".strip()
        if len(detail) > 800:
            detail = detail[:800] + " ..."
        doc = _first_line(getattr(item, "obj", None).__doc__ if getattr(item, "obj", None) else None)
        message = f"{doc} -- {detail}" if doc and detail else (doc or detail or "failed")
        self._write({"nodeid": item.nodeid, "outcome": "failed", "message": message, "error": error})


def _run_pytest(check_file: str, collect_only: bool = False) -> int:
    """Run (or only collect) one check file with pytest in this process, results to $GPT_LAB_RESULTS."""
    import pytest

    args = [check_file, "-q", "--assert=plain", "-p", "no:cacheprovider", "-p", "gpt_lab_grader.labs.adapters",
            "--no-header", "--rootdir", str(PACKAGE_ROOT), "-c", os.devnull, "-o", "addopts=", "--tb=no"]
    return int(pytest.main(args + (["--collect-only"] if collect_only else []),
                           plugins=[ResultWriter(os.environ["GPT_LAB_RESULTS"])]))


def _worker(check_file: str, collect_only: bool = False) -> NoReturn:
    """In the pytest subprocess: `_run_pytest`, then exit with its status. The results are on disk by then (the
    sandbox closed with the session), so the process ends at once: tearing down an interpreter that imported
    torch takes 0.7 s, once per graded notebook."""
    import torch

    torch.set_num_threads(1)
    status = _run_pytest(check_file, collect_only)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpt_lab_grader.checks",
                                     description="Run a lab's hidden checks against one notebook.")
    parser.add_argument("lab")
    parser.add_argument("notebook")
    parser.add_argument("--timeout", type=float, default=120)
    parser.add_argument("--memory-mb", type=int, default=4096)
    parser.add_argument("--course", default=".", help="the course folder (default: the current directory)")
    parser.add_argument("--unsandboxed", action="store_true", help="run the student's code without bubblewrap")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON here")
    args = parser.parse_args(argv)
    results = run_checks(args.lab, args.notebook, args.timeout, args.memory_mb, course=args.course,
                         sandboxed=not args.unsandboxed)
    for r in results:
        print(f"{'PASS' if r.passed else 'FAIL'} {r.points:g}/{r.max_points:g}  {r.name}"
              + (f"\n      {r.message}" if r.message else ""))
    print(f"total: {sum(r.points for r in results):g}/{sum(r.max_points for r in results):g}")
    if args.json:
        Path(args.json).write_text(json.dumps([r.to_dict() for r in results], indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`gpt-lab-grade LAB SUBMISSIONS`: from a folder (or zip) of submitted notebooks to grades and feedback.

    collect  -> OUT/inbox/<student>.ipynb              (collect.py: folder, nbgrader tree or LMS zip)
    prepare  -> OUT/.grader/course/                    (autograde.py: the lab's gradebook + guarded kernel,
                                                        and a cache warmed by running the solution once)
    per student, in parallel, each part in its own killable process (pool.py):
      nbgrader autograde in OUT/workspace/<student>/   (notebook tests, hidden tests restored by nbgrader)
      hidden pytest checks via run_checks              (checks.py: graded functions in the sandbox)
    every run of student code is confined by bubblewrap (confine.py); without it, grading stops unless the
    instructor passes --unsandboxed, and the grade table's `sandbox` column says so
    write    -> OUT/grades.csv, OUT/feedback/<student>.html, OUT/distribution.png   (report.py)

A submission that hangs, crashes, floods output or touches what it must not only changes its own row.
Nothing depends on timing or order: re-running writes the same grades.
"""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from gpt_lab_grader.autograde import Course, autograde, needs_cache, prepare_course, warm_cache
from gpt_lab_grader.checks import run_checks
from gpt_lab_grader.collect import collect_submissions
from gpt_lab_grader.course import find_course
from gpt_lab_grader.confine import bwrap_problem
from gpt_lab_grader.labs import LABS, resolve_lab
from gpt_lab_grader.pool import Failure, Job, forkserver_context, run_jobs
from gpt_lab_grader.report import StudentResult, plot_distribution, write_feedback, write_grades_csv
from gpt_lab_grader.results import Result
from gpt_lab_grader.submission import SubmissionError, read_notebook

STARTUP_S = 120  # allowance for starting nbgrader and the kernel (slow on a busy machine)
GENERATED = ("inbox", "workspace", "feedback", ".grader", "grades.csv", "distribution.png")
# what a check's failure kind means for the student's row (see sandbox.py's errors)
CHECK_STATUS = {"ForbiddenOperation": "rejected", "ReferenceCall": "rejected", "CallTimeout": "timeout",
                "NotRun": "timeout", "Crashed": "crashed"}
CHECKS_MIN_S = 120  # the hidden checks of one notebook always get at least this long in total


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here and the instructor did not pass --unsandboxed."""


def hidden_checks(lab: str, notebook: str, timeout_s: float, memory_mb: int, deny: list[str], tmp: str,
                  course: str, sandboxed: bool = True) -> list[dict]:
    """The lab's hidden checks on one notebook, as dicts (runs in a pool process).

    Their scratch folders go under `tmp`, in the student's workspace, which every other student's code is
    denied (in the shared /tmp, a hostile notebook could find and overwrite another student's copy)."""
    Path(tmp).mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = None
    return [r.to_dict() for r in run_checks(lab, notebook, timeout_s=timeout_s, memory_mb=memory_mb, deny=deny,
                                            course=course, sandboxed=sandboxed)]


def _merge_notebook(r: StudentResult, course: Course, outcome, limit_s: float) -> None:
    if isinstance(outcome, Failure):
        why = {"timeout": f"the notebook did not finish within {limit_s:.0f} s",
               "crashed": "the process running the notebook died",
               "error": "nbgrader failed on this notebook"}[outcome.kind]
        r.cells = [Result(name, 0.0, points, False, f"not run: {why}") for name, points in course.cells.items()]
        r.flag(outcome.kind, f"{why}: the notebook tests score 0")
        return
    r.cells = [Result.from_dict(d) for d in outcome["cells"]]
    for status, note in outcome["notes"]:
        r.flag(status, note)


def _merge_checks(r: StudentResult, outcome) -> None:
    if isinstance(outcome, Failure):
        r.checks = []
        r.flag(outcome.kind, f"the hidden checks could not run ({outcome.kind}): they score 0")
        return
    r.checks = [Result.from_dict(d) for d in outcome]
    hits: dict[tuple[str, str], list[str]] = {}  # (status, what happened) -> names of the checks
    for d in outcome:
        status = CHECK_STATUS.get(d.get("error", ""))
        if status and not d["passed"]:
            what = d["message"].split(" -- ", 1)[-1] if status == "rejected" else status
            hits.setdefault((status, what), []).append(d["name"])
    for (status, what), names in hits.items():
        listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        r.flag(status, {"rejected": f"hidden checks: {what}",
                        "timeout": f"hidden checks stopped at their time limit: {listed}",
                        "crashed": f"hidden checks that crashed the process running your code: {listed}"}[status])


def _deny_list(out: Path, source: Path, workspaces: dict[str, Path], student: str) -> list[str]:
    """Paths one student's code may not touch: everything of the grader, of the other students, and of its
    own workspace but `home/` (the kernel's folder) and `checks-tmp/` (the checks' scratch folders); its
    autograded notebook, for one, holds the hidden tests."""
    own = workspaces[student]
    paths = [source, *(out / name for name in GENERATED if name != "workspace")]
    paths += [ws for ws in workspaces.values() if ws != own]
    paths += [own / name for name in ("submitted", "autograded", "runtime", "guard.log", "nbgrader.log")]
    return [str(p) for p in paths]


def _clear_previous_run(out: Path) -> None:
    """Delete what an earlier run wrote to `out`, and nothing else (refuse a folder that looks like another's)."""
    ours = (out / ".grader").is_dir()
    for name in GENERATED:
        path = out / name
        if path.exists() and not ours:
            raise ValueError(f"{out} already holds {name} that gpt-lab-grade did not write: choose a new --out folder")
        shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)


def _workspaces(submissions: list, course: Course, root: Path) -> tuple[dict[str, StudentResult], dict[str, Path]]:
    """A row per student, and for each readable notebook an nbgrader workspace: notebook + gradebook copy."""
    results: dict[str, StudentResult] = {}
    workspaces: dict[str, Path] = {}
    for sub in submissions:
        r = results[sub.student] = StudentResult(sub.student, course.lab, course.max_points, 0.0)
        if sub.error:
            r.flag("invalid", sub.error)
            continue
        try:
            read_notebook(sub.notebook)
        except SubmissionError as exc:
            r.flag("invalid", str(exc))
            continue
        ws = workspaces[sub.student] = root / sub.student
        target = ws / "submitted" / sub.student / course.lab / f"{course.lab}.ipynb"
        target.parent.mkdir(parents=True)
        shutil.copyfile(sub.notebook, target)
        shutil.copyfile(course.gradebook, ws / "gradebook.db")
    return results, workspaces


def grade(lab: str, submissions: str | Path, out: str | Path | None = None, jobs: int = 1, timeout_s: float = 300,
          memory_mb: int = 4096, name_regex: str | None = None, progress: bool = True,
          course: str | Path | None = None, unsandboxed: bool = False) -> list[StudentResult]:
    """Grade every submission of `lab` in `submissions`; write grades.csv, feedback/ and distribution.png to `out`.

    `course`: the course folder (solutions/, labs/, nbgrader_config.py; default: the current directory).
    `unsandboxed`: grade even where bubblewrap cannot run (student code then runs under the audit hook only,
    and the grade table says "unsandboxed"); without it, a missing bubblewrap raises SandboxUnavailable.

    `timeout_s`: time allowed to run one notebook (each cell, and the whole run plus startup), and again (at
    least CHECKS_MIN_S) for all its hidden checks, where one call of a graded function gets at most the lab's
    per-call limit. `memory_mb`: address-space limit of the notebook's kernel and of the check sandbox.
    From a script, call it under `if __name__ == "__main__":` (the pool's processes re-import the main module).
    """
    lab = resolve_lab(lab)
    spec = LABS[lab]
    course_dir = find_course(course)
    source = Path(submissions).resolve()
    out = Path(out).resolve() if out else (course_dir / "grading" / lab)
    if jobs < 1 or timeout_s <= 0 or memory_mb < 256:
        raise ValueError(f"need jobs >= 1, timeout > 0 and memory >= 256 MB (got {jobs}, {timeout_s}, {memory_mb})")
    if source.is_dir() and (out == source or source in out.parents):
        raise ValueError(f"--out {out} is inside the submissions folder {source}: choose another folder")
    if not spec.notebook(course_dir).exists():
        raise FileNotFoundError(f"the source notebook of {lab} is missing: {spec.notebook(course_dir)}")
    problem = bwrap_problem()
    if problem and not unsandboxed:
        raise SandboxUnavailable(f"{problem}. Student code must run in a sandbox: install bubblewrap, or pass "
                                 "--unsandboxed to grade anyway with only the audit hook (the grade table will "
                                 "say so)")
    sandboxed = problem is None
    _clear_previous_run(out)
    submissions_found = collect_submissions(source, lab, out / "inbox", name_regex)
    if not submissions_found:
        raise ValueError(f"no notebooks for {lab} found in {source}")
    course = prepare_course(lab, spec.notebook(course_dir), spec.release(course_dir), out / ".grader" / "course",
                            course_dir)
    ctx = forkserver_context(["nbgrader.apps", "gpt_lab_grader.grade"])
    if needs_cache(spec.notebook(course_dir)):
        warm_s = max(timeout_s, 600)  # building the cache may train the (tiny) course model
        warm = run_jobs([Job("warm", warm_cache, (spec.notebook(course_dir), course.root / "cache", warm_s),
                             3 * warm_s)], ctx=ctx)
        if isinstance(warm["warm"], Failure):
            course.warnings.append(f"could not run the solution notebook to warm the cache: {warm['warm'].message}")
    for warning in course.warnings:
        print(f"gpt-lab-grade: warning: {warning}", file=sys.stderr)
    if not sandboxed:
        print(f"gpt-lab-grade: warning: UNSANDBOXED run ({problem}): student code runs with only the audit hook",
              file=sys.stderr)
    results, workspaces = _workspaces(submissions_found, course, out / "workspace")

    notebook_limit, checks_s = timeout_s + STARTUP_S, max(timeout_s, CHECKS_MIN_S)
    job_list = []
    for student, ws in workspaces.items():
        deny = _deny_list(out, source, workspaces, student)
        notebook = str(out / "inbox" / f"{student}.ipynb")  # as submitted (nbgrader's copy gets repaired)
        job_list.append(Job(("nbgrader", student), autograde,
                            (course, ws, student, timeout_s, memory_mb, deny, sandboxed), notebook_limit))
        job_list.append(Job(("checks", student), hidden_checks,
                            (lab, notebook, checks_s, memory_mb, deny, str(ws / "checks-tmp"), str(course_dir),
                             sandboxed), checks_s + STARTUP_S))
    bar = tqdm(total=len(results), desc=f"grading {lab}", unit="student", disable=not progress, file=sys.stderr)
    bar.update(len(results) - len(workspaces))
    pending = {student: 2 for student in workspaces}

    def done(key, _result) -> None:
        pending[key[1]] -= 1
        if not pending[key[1]]:
            bar.update(1)

    outcomes = run_jobs(job_list, workers=jobs, on_result=done, ctx=ctx)
    bar.close()

    for student in workspaces:
        r = results[student]
        _merge_notebook(r, course, outcomes[("nbgrader", student)], notebook_limit)
        _merge_checks(r, outcomes[("checks", student)])
        log = outcomes[("nbgrader", student)]
        if isinstance(log, dict):
            (workspaces[student] / "nbgrader.log").write_text(log["log"])
    ordered = [results[s] for s in sorted(results)]
    for r in ordered:
        r.hidden_max = spec.hidden_max_points
        r.sandbox = "bubblewrap" if sandboxed else "unsandboxed"
        write_feedback(r, out / "feedback")
    write_grades_csv(ordered, out / "grades.csv")
    plot_distribution(ordered, out / "distribution.png", lab)
    return ordered

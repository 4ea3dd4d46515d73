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
written answers (nbgrader's hand-graded cells) are not scored: total and max are the autograded points, and
the `manual_pending` column gives the points an instructor still has to grade by hand (report.py), reading
the answers in OUT/inbox/<student>.ipynb; the final grade is total + those marks, out of max + manual_max

A submission that hangs, crashes, floods output or touches what it must not only changes its own row.
Nothing depends on timing or order: re-running writes the same grades.
"""
from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import types
from pathlib import Path

from tqdm.auto import tqdm

from gpt_lab_grader.borrowing import copied_references
from gpt_lab_grader.autograde import Course, autograde, needs_cache, prepare_course, warm_cache, written_answers
from gpt_lab_grader.checks import collect_checks, run_checks
from gpt_lab_grader.collect import collect_submissions, read_roster, safe_student_id
from gpt_lab_grader.course import find_course
from gpt_lab_grader.confine import WALL_FACTOR, bwrap_problem
from gpt_lab_grader.labs import LABS, resolve_lab
from gpt_lab_grader.pool import Failure, Job, forkserver_context, run_jobs
from gpt_lab_grader.report import (CELL_PREFIX, CHECK_PREFIX, StudentResult, grade_row, plot_distribution,
                                   read_grades_csv, write_feedback, write_rows)
from gpt_lab_grader.results import Result
from gpt_lab_grader.submission import SubmissionError, extract_definitions, read_notebook

STARTUP_S = 120  # allowance for starting nbgrader and the kernel (slow on a busy machine)
GENERATED = ("inbox", "workspace", "feedback", ".grader", "grades.csv", "distribution.png")
# what a check's failure kind means for the student's row (see sandbox.py's errors)
CHECK_STATUS = {"ForbiddenOperation": "rejected", "ReferenceCall": "review", "CallTimeout": "timeout",
                "NotRun": "timeout", "Crashed": "crashed"}
BORROWER = re.compile(r"`([\w.]+)` calls [\w.]+ instead of implementing it")
CHECKS_MIN_S = 120  # the hidden checks of one notebook always get at least this long in total


class SandboxUnavailable(RuntimeError):
    """bubblewrap cannot run here and the instructor did not pass --unsandboxed."""


def hidden_checks(lab: str, notebook: str, timeout_s: float, memory_mb: int, deny: list[str], tmp: str,
                  course: str, sandboxed: bool = True, wall_factor: float = WALL_FACTOR) -> list[dict]:
    """The lab's hidden checks on one notebook, as dicts (runs in a pool process).

    Their scratch folders go under `tmp`, in the student's workspace, which every other student's code is
    denied (in the shared /tmp, a hostile notebook could find and overwrite another student's copy)."""
    Path(tmp).mkdir(parents=True, exist_ok=True)
    os.environ["TMPDIR"] = tmp
    tempfile.tempdir = None
    return [r.to_dict() for r in run_checks(lab, notebook, timeout_s=timeout_s, memory_mb=memory_mb, deny=deny,
                                            course=course, sandboxed=sandboxed, wall_factor=wall_factor)]


def _merge_notebook(r: StudentResult, course: Course, outcome, limit_s: float) -> None:
    if isinstance(outcome, Failure):
        why = {"timeout": f"the notebook did not finish within {limit_s:.0f} s of wall-clock time",
               "crashed": "the process running the notebook died",
               "error": "nbgrader failed on this notebook"}[outcome.kind]
        r.cells = [Result(name, 0.0, points, False, f"not run: {why}") for name, points in course.cells.items()]
        r.flag(outcome.kind, f"{why}: the notebook tests score 0")
        return
    r.cells = [Result.from_dict(d) for d in outcome["cells"]]
    for status, note in outcome["notes"]:
        r.flag(status, note)


def _merge_checks(r: StudentResult, outcome) -> set[str]:
    """The hidden checks into the row; returns the graded functions flagged for calling the reference."""
    if isinstance(outcome, Failure):
        r.checks = []
        r.flag(outcome.kind, f"the hidden checks could not run ({outcome.kind}): they score 0")
        return set()
    r.checks = [Result.from_dict(d) for d in outcome]
    hits: dict[tuple[str, str], list[str]] = {}  # (status, what happened) -> names of the checks
    borrowed: set[str] = set()
    for d in outcome:
        status = CHECK_STATUS.get(d.get("error", ""))
        if status and not d["passed"]:
            what = d["message"].split(" -- ", 1)[-1] if status in ("rejected", "review") else status
            hits.setdefault((status, what), []).append(d["name"])
            found = BORROWER.search(d["message"]) if status == "review" else None
            if found:
                borrowed.add(found.group(1).split(".")[0])
    for (status, what), names in hits.items():
        listed = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4 else "")
        r.flag(status, {"rejected": f"hidden checks: {what}",
                        "review": f"hidden checks: {what} (that function scores 0)",
                        "timeout": f"hidden checks stopped at their time limit: {listed}",
                        "crashed": f"hidden checks that crashed the process running your code: {listed}"}[status])
    return borrowed


def tested_functions(course: Course, graded: tuple[str, ...]) -> dict[str, set[str]]:
    """Notebook test cell id -> the graded names its released source calls."""
    import json

    cells = json.loads((course.root / "labs" / course.lab / f"{course.lab}.ipynb").read_text())["cells"]
    out = {}
    for cell in cells:
        grade_id = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
        if grade_id in course.cells:
            text = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
            out[grade_id] = {name for name in graded if re.search(rf"\b{re.escape(name)}\b", text)}
    return out


def penalise(r: StudentResult, borrowed: set[str], tests: dict[str, set[str]]) -> None:
    """A function that calls the reference scores 0: its notebook tests too (its hidden checks failed already)."""
    for cell in r.cells:
        culprits = sorted(tests.get(cell.name, set()) & borrowed)
        if culprits and cell.points:
            cell.points, cell.passed = 0.0, False
            cell.message = (f"scores 0: {', '.join(f'`{c}`' for c in culprits)} calls gpt_lab's reference instead of "
                            "implementing it")


def flag_copies(r: StudentResult, notebook: Path, spec) -> None:
    """Mark the row "review" for each graded function that is a copy of its reference (same normalised syntax
    tree; nothing is taken off: an instructor decides)."""
    try:
        extraction = extract_definitions(notebook, spec.graded)
    except SubmissionError:
        return
    for name, label in sorted(copied_references(extraction, spec.references).items()):
        r.flag("review", f"`{name}` has the same syntax tree as {label} (a copy of the reference?): review it")


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
        r = results[sub.student] = StudentResult(sub.student, course.lab, course.max_points, 0.0,
                                                 lms_user_id=sub.lms_user_id, late="late" if sub.late else "",
                                                 manual_max=course.manual_max)
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


def _collect(source: Path, lab: str, out: Path, name_regex: str | None, only: str | None) -> list:
    """The submissions to grade, copied to OUT/inbox: all of them, or (`only`) that student's alone."""
    if only is None:
        return collect_submissions(source, lab, out / "inbox", name_regex)
    with tempfile.TemporaryDirectory(prefix="inbox-", dir=out / ".grader") as tmp:
        found = [s for s in collect_submissions(source, lab, Path(tmp), name_regex) if s.student == only]
        for sub in found:
            (out / "inbox").mkdir(exist_ok=True)
            if sub.notebook is not None:
                sub.notebook = Path(shutil.copyfile(sub.notebook, out / "inbox" / f"{only}.ipynb"))
    return found


def _previous_rows(out: Path, only: str) -> dict[str, dict[str, str]]:
    """The rows of the earlier run in `out`, which `--only` keeps but for its own student's."""
    if not (out / ".grader").is_dir() or not (out / "grades.csv").is_file():
        raise ValueError(f"--only {only}: {out} holds no earlier run of gpt-lab-grade (grade everyone first)")
    return read_grades_csv(out / "grades.csv")


def grade(lab: str, submissions: str | Path, out: str | Path | None = None, jobs: int = 1, timeout_s: float = 300,
          memory_mb: int = 4096, name_regex: str | None = None, progress: bool = True,
          course: str | Path | None = None, unsandboxed: bool = False, roster: str | Path | None = None,
          only: str | None = None, wall_factor: float = WALL_FACTOR) -> list[StudentResult]:
    """Grade every submission of `lab` in `submissions`; write grades.csv, feedback/ and distribution.png to `out`.

    `course`: the course folder (solutions/, labs/, nbgrader_config.py; default: the current directory).
    `unsandboxed`: grade even where bubblewrap cannot run (student code then runs under the audit hook only,
    and the grade table says "unsandboxed"); without it, a missing bubblewrap raises SandboxUnavailable.
    `roster`: a CSV of the class (see `collect.read_roster`): every student on it gets a row, "missing" when
    nothing was submitted. `only`: regrade that one student in the earlier run in `out`, leaving every other
    row, feedback page and workspace as it was.

    `timeout_s`: CPU seconds allowed to one notebook (each cell, and the whole run after the kernel started),
    and again (at least CHECKS_MIN_S) to all its hidden checks, where one call of a graded function gets at most
    the lab's per-call limit (CPU seconds too). Wall-clock limits are backstops, `wall_factor` times as long, so
    a loaded machine gives the same grades. `memory_mb`: address-space limit of the kernel and the check sandbox.
    From a script, call it under `if __name__ == "__main__":` (the pool's processes re-import the main module).
    Returns the rows graded in this run (with `only`: that student's).
    """
    lab = resolve_lab(lab)
    spec = LABS[lab]
    course_dir = find_course(course)
    source = Path(submissions).resolve()
    out = Path(out).resolve() if out else (course_dir / "grading" / lab)
    if jobs < 1 or timeout_s <= 0 or memory_mb < 256 or wall_factor < 1:
        raise ValueError(f"need jobs >= 1, timeout > 0, memory >= 256 MB and a wall factor >= 1 (got {jobs}, "
                         f"{timeout_s}, {memory_mb}, {wall_factor})")
    if source.is_dir() and (out == source or source in out.parents):
        raise ValueError(f"--out {out} is inside the submissions folder {source}: choose another folder")
    if not spec.notebook(course_dir).exists():
        raise FileNotFoundError(f"the source notebook of {lab} is missing: {spec.notebook(course_dir)}")
    class_list = read_roster(roster) if roster is not None else None
    problem = bwrap_problem()
    if problem and not unsandboxed:
        raise SandboxUnavailable(f"{problem}. Student code must run in a sandbox: install bubblewrap, or pass "
                                 "--unsandboxed to grade anyway with only the audit hook (the grade table will "
                                 "say so)")
    sandboxed = problem is None
    if only is not None:
        only = safe_student_id(only)
        kept_rows = _previous_rows(out, only)
    else:
        _clear_previous_run(out)
        (out / ".grader").mkdir(parents=True, exist_ok=True)
    submissions_found = _collect(source, lab, out, name_regex, only)
    if not submissions_found and not (only and class_list is not None and only in class_list):
        raise ValueError(f"no notebooks for {lab} found in {source}" + (f" from student {only}" if only else ""))
    if only is not None:  # that student's files of the earlier run go; nobody else's are touched
        shutil.rmtree(out / "workspace" / only, ignore_errors=True)
        (out / "feedback" / f"{only}.html").unlink(missing_ok=True)
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
    if class_list is not None:
        for student, lms_user_id in class_list.items():
            if only is not None and student != only:
                continue
            r = results.get(student)
            if r is None:
                r = results[student] = StudentResult(student, lab, course.max_points, 0.0, lms_user_id=lms_user_id,
                                                     manual_max=course.manual_max)
                r.flag("missing", "no submission")
            elif lms_user_id and not r.lms_user_id:
                r.lms_user_id = lms_user_id
        for student in sorted(set(results) - set(class_list)):
            results[student].flag("ok", "this student is not on the roster")
    others = [p for p in (out / "workspace").iterdir() if p.is_dir() and p.name not in workspaces] \
        if (out / "workspace").is_dir() else []

    # CPU-time limits inside; these wall-clock limits of the pool are backstops (wall_factor times as long)
    checks_s = max(timeout_s, CHECKS_MIN_S)
    notebook_limit = wall_factor * (timeout_s + STARTUP_S)
    job_list = []
    for student, ws in workspaces.items():
        deny = _deny_list(out, source, workspaces, student) + [str(p) for p in others]
        notebook = str(out / "inbox" / f"{student}.ipynb")  # as submitted (nbgrader's copy gets repaired)
        job_list.append(Job(("nbgrader", student), autograde,
                            (course, ws, student, timeout_s, memory_mb, deny, sandboxed, wall_factor),
                            notebook_limit))
        job_list.append(Job(("checks", student), hidden_checks,
                            (lab, notebook, checks_s, memory_mb, deny, str(ws / "checks-tmp"), str(course_dir),
                             sandboxed, wall_factor), wall_factor * checks_s + 2 * STARTUP_S))
    bar = tqdm(total=len(results), desc=f"grading {lab}", unit="student", disable=not progress, file=sys.stderr)
    bar.update(len(results) - len(workspaces))
    pending = {student: 2 for student in workspaces}

    def done(key, _result) -> None:
        pending[key[1]] -= 1
        if not pending[key[1]]:
            bar.update(1)

    outcomes = run_jobs(job_list, workers=jobs, on_result=done, ctx=ctx)
    bar.close()

    tests = tested_functions(course, spec.graded)
    for student in workspaces:
        r = results[student]
        _merge_notebook(r, course, outcomes[("nbgrader", student)], notebook_limit)
        borrowed = _merge_checks(r, outcomes[("checks", student)])
        penalise(r, borrowed, tests)
        flag_copies(r, out / "inbox" / f"{student}.ipynb", spec)
        r.manual = written_answers(course, out / "inbox" / f"{student}.ipynb")  # graded by hand, later
        log = outcomes[("nbgrader", student)]
        if isinstance(log, dict):
            (workspaces[student] / "nbgrader.log").write_text(log["log"])
    ordered = [results[s] for s in sorted(results)]
    for r in ordered:
        r.hidden_max = spec.hidden_max_points
        r.sandbox = "bubblewrap" if sandboxed else "unsandboxed"
        write_feedback(r, out / "feedback")
    items = [CELL_PREFIX + name for name in course.cells] + [CHECK_PREFIX + name for name, _ in collect_checks(lab)]
    rows = {r.student: grade_row(r) for r in ordered}
    if only is not None:
        rows = {**kept_rows, **rows}
    write_rows(list(rows.values()), out / "grades.csv", items)
    totals = [types.SimpleNamespace(total=float(row["total"]), max=float(row["max"]), status=row["status"])
              for _, row in sorted(rows.items())]
    plot_distribution(totals, out / "distribution.png", lab)
    return ordered

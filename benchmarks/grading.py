"""How long `gpt-lab-grade` takes: seconds per submission for every lab, then a full class of the slowest lab.

    python benchmarks/grading.py                       # 4 submissions per lab, then 40 of the slowest lab
    python benchmarks/grading.py --labs lab01 --per-lab 6 --class-size 0

Target (issue 10): 40 submissions of the largest lab graded in <= 10 minutes on 2 CPU cores (--jobs 2).
Submissions alternate between the lab's solution notebook (a complete answer: every cell runs, every
check passes) and the released stub (every test fails fast), so a class is half worst case, half best.
"setup s" is everything before the students are graded (collecting, generating the gradebook, counting the
checks, and for labs 4-7 running the solution once to fill the model cache); "s / submission" is the
students' part divided by their number.
The class run includes its setup, as a real grading run does. The machine's load is printed: on a
shared machine the figures are pessimistic.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import gpt_lab_grader.grade as grade_module
from gpt_lab_grader.labs import LABS, resolve_lab
from gpt_lab_grader.pool import run_jobs

REPO = Path(__file__).resolve().parents[1]  # the course folder graded


def make_class(lab: str, n: int, folder: Path) -> Path:
    """`n` submissions of `lab` in `folder`: solution, stub, solution, ..."""
    spec = LABS[lab]
    folder.mkdir(parents=True)
    for i in range(n):
        source = spec.notebook(REPO) if i % 2 == 0 or not spec.release(REPO).exists() else spec.release(REPO)
        shutil.copyfile(source, folder / f"student{i:03d}.ipynb")
    return folder


def run(lab: str, n: int, jobs: int, timeout_s: float) -> tuple[float, float, int]:
    """(wall-clock seconds to grade `n` submissions, seconds of it spent grading the students, number ok).

    The students' part is the last `run_jobs` call of `grade` (timed by wrapping it); the rest is setup.
    """
    spent = []

    def timed_run_jobs(*args, **kwargs):
        start = time.perf_counter()
        try:
            return run_jobs(*args, **kwargs)
        finally:
            spent.append(time.perf_counter() - start)

    with tempfile.TemporaryDirectory(prefix="gpt_lab_bench_") as tmp, \
            mock.patch.object(grade_module, "run_jobs", timed_run_jobs):
        folder = make_class(lab, n, Path(tmp) / "submissions")
        start = time.perf_counter()
        results = grade_module.grade(lab, folder, Path(tmp) / "out", jobs=jobs, timeout_s=timeout_s, progress=False,
                                     course=REPO)
        seconds = time.perf_counter() - start
    return seconds, spent[-1], sum(r.status == "ok" for r in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--labs", nargs="*", default=None, help="labs to time (default: every lab with a release)")
    parser.add_argument("--per-lab", type=int, default=4, help="submissions per lab in the first table")
    parser.add_argument("--class-size", type=int, default=40, help="submissions of the slowest lab (0: skip)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args(argv)

    labs = [resolve_lab(x) for x in args.labs] if args.labs else [
        lab for lab, s in LABS.items()
        if s.notebook(REPO).exists() and s.release(REPO).exists() and s.check_file.exists()]
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.1f}, jobs: {args.jobs}, "
          f"GPT_LAB_FAST={os.environ.get('GPT_LAB_FAST', '0')} (notebooks always run with GPT_LAB_FAST=1)")
    print(f"\n{'lab':<24}{'setup s':>9}{'submissions':>12}{'wall s':>9}{'s / submission':>16}{'ok':>5}{'load':>7}")
    per_submission = {}
    for lab in labs:
        seconds, students, ok = run(lab, args.per_lab, args.jobs, args.timeout)
        per_submission[lab] = students / args.per_lab
        print(f"{lab:<24}{seconds - students:>9.1f}{args.per_lab:>12}{seconds:>9.1f}{per_submission[lab]:>16.1f}"
              f"{ok:>5}{os.getloadavg()[0]:>7.1f}", flush=True)
    if args.class_size and per_submission:
        lab = max(per_submission, key=per_submission.get)
        seconds, students, ok = run(lab, args.class_size, args.jobs, args.timeout)
        verdict = "meets" if seconds <= 600 else "misses"
        print(f"\n{args.class_size} submissions of {lab} (the slowest) with --jobs {args.jobs}: {seconds:.0f} s in all, "
              f"setup {seconds - students:.0f} s, {students / args.class_size:.1f} s per submission, {ok} ok; load "
              f"average {os.getloadavg()[0]:.1f}: {verdict} the 600 s target")
    return 0


if __name__ == "__main__":
    sys.exit(main())

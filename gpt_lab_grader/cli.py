"""`gpt-lab-grade`: the instructor's command (not part of the students' `gpt_lab`).

    gpt-lab-grade LAB SUBMISSIONS [--course DIR] [--out DIR] [--jobs N] [--timeout S] [--memory-mb M]
                  [--name-regex RE] [--roster FILE] [--only STUDENT] [--wall-factor F] [--unsandboxed]
                  [--no-progress]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gpt_lab_grader.confine import WALL_FACTOR
from gpt_lab_grader.course import find_course
from gpt_lab_grader.grade import CHECKS_MIN_S, SandboxUnavailable, grade
from gpt_lab_grader.labs import resolve_lab


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gpt-lab-grade`."""
    p = argparse.ArgumentParser(prog="gpt-lab-grade",
                                description="grade a folder / nbgrader tree / LMS zip of submitted notebooks")
    p.add_argument("lab", help="lab id: lab01-attention, lab01, 1 or attention")
    p.add_argument("submissions", help="folder of <student>.ipynb, nbgrader submitted/ tree, or LMS .zip")
    p.add_argument("--course", default=None,
                   help="the course folder with solutions/ and labs/ (default: the current directory)")
    p.add_argument("--out", default=None, help="output folder (default: COURSE/grading/<lab>)")
    p.add_argument("--jobs", type=int, default=1, help="students graded in parallel (default 1)")
    p.add_argument("--timeout", type=float, default=300,
                   help="CPU seconds to run one notebook (per cell and in all), and again, at least "
                        f"{CHECKS_MIN_S}, for its hidden checks (default 300)")
    p.add_argument("--wall-factor", type=float, default=WALL_FACTOR,
                   help="wall-clock backstops are this many times the CPU-time limits (default %(default)g)")
    p.add_argument("--roster", default=None,
                   help="CSV of the class (a 'student_id' or 'student' column, optionally 'lms_user_id'): everyone gets a row, "
                        "'missing' without a submission")
    p.add_argument("--only", default=None, metavar="STUDENT",
                   help="regrade this student in the earlier run in --out, leaving every other row as it is")
    p.add_argument("--memory-mb", type=int, default=4096, help="memory limit of student code (default 4096)")
    p.add_argument("--name-regex", default=None,
                   help="nbgrader named_regexp with (?P<student_id>...) for LMS file names in a zip")
    p.add_argument("--unsandboxed", action="store_true",
                   help="grade even if bubblewrap cannot run (student code then runs under the audit hook only; "
                        "the grade table records it)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Run `gpt-lab-grade`; 0 when every submission got a row, 2 on a usage error, 3 without a sandbox."""
    args = build_parser().parse_args(argv)
    try:
        results = grade(args.lab, args.submissions, args.out, jobs=args.jobs, timeout_s=args.timeout,
                        memory_mb=args.memory_mb, name_regex=args.name_regex, progress=not args.no_progress,
                        course=args.course, unsandboxed=args.unsandboxed, roster=args.roster, only=args.only,
                        wall_factor=args.wall_factor)
    except SandboxUnavailable as exc:
        print(f"gpt-lab-grade: error: {exc}", file=sys.stderr)
        return 3
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"gpt-lab-grade: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out).resolve() if args.out else find_course(args.course) / "grading" / resolve_lab(args.lab)
    width = max(len(r.student) for r in results)
    for r in results:
        by_hand = f" + {r.manual_pending:g} by hand" if r.manual_pending else ""
        print(f"{r.student:<{width}}  {r.total:6.2f} / {r.max:g}{by_hand}  {r.status:<8}  {r.message[:100]}")
    print(f"\nsandbox:  {results[0].sandbox}\ngrades:   {out / 'grades.csv'}\n"
          f"feedback: {out / 'feedback'}/<student>.html\nfigure:   {out / 'distribution.png'}\n"
          f"workspace (autograded notebooks, logs): {out / 'workspace'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

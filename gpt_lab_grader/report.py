"""What a student's grade is made of, and how it is written out: grades.csv, one feedback page per
student, and a grade-distribution figure.

Feedback pages show each graded part with its points and, for failures, a short student-facing message:
the exception name and message of a failed notebook test, or a hidden check's own message. They never show
test source or tracebacks (hidden tests live in both), and every string is HTML-escaped.

Written answers (nbgrader's hand-graded cells) get no automatic score, so they count in neither the total nor
the maximum: `total` / `max` are the autograded points, `manual_pending` the points of written answers an
instructor still has to grade (an answer left blank scores 0 and is not pending) and `manual_max` all the
written answers' points. The final grade is total + the instructor's marks, out of max + manual_max.
"""
from __future__ import annotations

import csv
import html
from dataclasses import dataclass, field
from pathlib import Path

from gpt_lab_grader.results import MANUAL, Result

# Most severe first: the row's status is the most severe thing that happened.
STATUSES = {
    "invalid": "the submission could not be graded (no readable notebook): 0 points",
    "missing": "no submission from this student on the roster: 0 points",
    "rejected": "the notebook tried something forbidden (reading tests, solutions or the gradebook, "
                "writing into the course or the installed packages, a subprocess, a socket): 0 points, "
                "to be reviewed",
    "error": "the grader failed on this submission: review it by hand",
    "review": "graded, but to be reviewed: a graded function calls or copies the reference implementation "
              "(a function that calls it scores 0)",
    "crashed": "the notebook's process died (os._exit, a crash or the memory limit); graded on what ran",
    "timeout": "a time limit was hit; graded on what finished",
    "ok": "graded",
}
MESSAGE_CHARS = 400


@dataclass
class StudentResult:
    """Everything graded for one student; scores are 0 when the status is invalid or rejected."""

    student: str
    lab: str
    nbgrader_max: float
    hidden_max: float
    status: str = "ok"
    notes: list[str] = field(default_factory=list)  # why the status is what it is, student-facing
    cells: list[Result] = field(default_factory=list)
    checks: list[Result] = field(default_factory=list)
    sandbox: str = "bubblewrap"  # how the student's code was confined: "bubblewrap" or "unsandboxed"
    lms_user_id: str = ""  # from the LMS file names or the roster
    late: str = ""  # "late" when the LMS marked the submission late
    manual_max: float = 0.0  # points of the lab's hand-graded cells (not in `max`)
    manual: list[Result] = field(default_factory=list)  # the written answers, scored by nobody yet

    def flag(self, status: str, note: str) -> None:
        """Raise the status to `status` if that is more severe, and record why."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}; one of {sorted(STATUSES)}")
        order = list(STATUSES)
        if order.index(status) < order.index(self.status):
            self.status = status
        if note and note not in self.notes:
            self.notes.append(note)

    @property
    def counts(self) -> bool:
        return self.status not in ("invalid", "rejected", "missing")

    @property
    def nbgrader_score(self) -> float:
        return sum(i.points for i in self.cells) if self.counts else 0.0

    @property
    def hidden_score(self) -> float:
        return sum(i.points for i in self.checks) if self.counts else 0.0

    @property
    def total(self) -> float:
        return self.nbgrader_score + self.hidden_score

    @property
    def max(self) -> float:
        """The autograded maximum (the written answers are in `manual_max`)."""
        return self.nbgrader_max + self.hidden_max

    @property
    def manual_pending(self) -> float:
        """Points of the written answers the instructor still has to grade (none when the row scores 0)."""
        return sum(i.max_points for i in self.manual if i.error == MANUAL) if self.counts else 0.0

    @property
    def message(self) -> str:
        """One line for the grade table: the notes, then what failed."""
        parts = list(self.notes)
        failed = [i.name for i in self.cells if not i.passed]
        if failed:
            parts.append("notebook tests failed: " + ", ".join(failed))
        failed = [i.name for i in self.checks if not i.passed]
        if failed:
            parts.append(f"{len(failed)} of {len(self.checks)} hidden checks failed")
        if self.counts:
            pending = [i.name for i in self.manual if i.error == MANUAL]
            blank = [i.name for i in self.manual if i.error != MANUAL]
            if pending:
                parts.append(f"written answers to grade by hand: {', '.join(pending)} "
                             f"({number(self.manual_pending)} points pending)")
            if blank:
                parts.append("written answers left blank (0): " + ", ".join(blank))
        text = "; ".join(parts) or "all tests and checks passed"
        return shorten(" ".join(text.split()))


def shorten(text: str, limit: int = MESSAGE_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def number(x: float) -> str:
    """Points as the table shows them: 3, 2.5, 0.33."""
    return f"{round(x, 2):g}"


def _csv_cell(text: str) -> str:
    """Neutralise spreadsheet formulas in student-controlled text (`=HYPERLINK(...)`)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


CSV_COLUMNS = ["student", "lab", "nbgrader_score", "hidden_score", "total", "max", "manual_pending", "manual_max",
               "status", "sandbox", "message", "lms_user_id", "late"]
CELL_PREFIX, CHECK_PREFIX = "nb:", "hidden:"  # per-item columns: points of each notebook test and hidden check


def item_columns(results: list[StudentResult]) -> list[str]:
    """The per-item column names, in the order the items appear (notebook tests, then hidden checks)."""
    cells = {CELL_PREFIX + i.name: None for r in results for i in r.cells}
    checks = {CHECK_PREFIX + i.name: None for r in results for i in r.checks}
    return [*cells, *checks]


def grade_row(r: StudentResult) -> dict[str, str]:
    """One student's row of grades.csv (scores as earned per item; the totals apply the status)."""
    row = {"student": r.student, "lab": r.lab, "nbgrader_score": number(r.nbgrader_score),
           "hidden_score": number(r.hidden_score), "total": number(r.total), "max": number(r.max),
           "manual_pending": number(r.manual_pending), "manual_max": number(r.manual_max), "status": r.status,
           "sandbox": r.sandbox, "message": _csv_cell(r.message), "lms_user_id": _csv_cell(r.lms_user_id), "late": r.late}
    row.update({CELL_PREFIX + i.name: number(i.points) for i in r.cells})
    row.update({CHECK_PREFIX + i.name: number(i.points) for i in r.checks})
    return row


def write_rows(rows: list[dict[str, str]], path: str | Path, items: list[str] | None = None) -> Path:
    """grades.csv from rows (dicts of strings), sorted by student id; per-item columns `items` (default:
    every item column of the rows, in order of appearance). Re-running writes the same bytes."""
    path = Path(path)
    if items is None:
        items = list(dict.fromkeys(k for row in rows for k in row if k.startswith((CELL_PREFIX, CHECK_PREFIX))))
    columns = CSV_COLUMNS + items
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(columns)
        for row in sorted(rows, key=lambda row: row["student"]):
            writer.writerow([row.get(c, "") for c in columns])
    return path


def write_grades_csv(results: list[StudentResult], path: str | Path, items: list[str] | None = None) -> Path:
    """grades.csv: one row per student, sorted by student id, with a column per notebook test and hidden
    check (item analysis); re-running writes the same bytes."""
    return write_rows([grade_row(r) for r in results], path, items if items is not None else item_columns(results))


def read_grades_csv(path: str | Path) -> dict[str, dict[str, str]]:
    """{student: row} from a grades.csv."""
    with Path(path).open(newline="", encoding="utf-8") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


_STYLE = """body{font-family:system-ui,sans-serif;max-width:52rem;margin:2rem auto;padding:0 1rem;color:#222}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}th,td{border:1px solid #ccc;padding:.35rem .5rem;
text-align:left;vertical-align:top}th{background:#f4f4f4}.pass{color:#1a7f37}.fail{color:#b42318}
.status{font-weight:bold}td.pts{white-space:nowrap;text-align:right}"""


def _rows(items: list[Result]) -> str:
    if not items:
        return "<p>Nothing was graded here.</p>"
    rows = []
    for i in items:
        mark = '<span class="pass">passed</span>' if i.passed else '<span class="fail">failed</span>'
        rows.append(f"<tr><td>{html.escape(i.name)}</td><td class=pts>{number(i.points)} / {number(i.max_points)}"
                    f"</td><td>{mark}</td><td>{html.escape(shorten(i.message))}</td></tr>")
    return ("<table><tr><th>test</th><th>points</th><th>result</th><th>what to look at</th></tr>"
            + "".join(rows) + "</table>")


def _written(r: StudentResult) -> str:
    """The written answers' section: each answer's points, to be graded by hand (nothing when the lab has none)."""
    if not r.manual_max:
        return ""
    rows = []
    for i in r.manual:
        pending = i.error == MANUAL and r.counts
        if pending:
            mark = "to be graded by hand"
        else:
            mark = '<span class="fail">0 (not answered)</span>' if r.counts else '<span class="fail">0</span>'
        rows.append(f"<tr><td>{html.escape(i.name)}</td><td class=pts>{'? ' if pending else '0 '}/ "
                    f"{number(i.max_points)}</td><td>{mark}</td></tr>")
    table = ("<table><tr><th>answer</th><th>points</th><th>result</th></tr>" + "".join(rows) + "</table>") if rows \
        else "<p>No written answers were read from this submission.</p>"
    return f"""<h2>Written answers</h2>
<p>Your written answers are graded by hand by your instructor, after this automatic run: their
{number(r.manual_max)} points are not in the total above (neither in the points nor in the maximum);
{number(r.manual_pending)} of them are still to be graded.</p>
{table}
"""


def feedback_html(r: StudentResult) -> str:
    """The student's feedback page: totals, status, then every notebook test and hidden check, and the written
    answers still to be graded by hand."""
    e = html.escape
    notes = "".join(f"<li>{e(shorten(n))}</li>" for n in r.notes)
    zeroed = "" if r.counts else "<p><b>This submission scores 0.</b></p>"
    by_hand_head = "<th>written answers (graded by hand)</th>" if r.manual_max else ""
    by_hand = (f"<td class=pts>{number(r.manual_pending)} / {number(r.manual_max)} pending</td>"
               if r.manual_max else "")
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{e(r.lab)}: feedback for {e(r.student)}</title>
<style>{_STYLE}</style></head><body>
<h1>{e(r.lab)}: feedback for {e(r.student)}</h1>
<table><tr><th>total{" (autograded)" if r.manual_max else ""}</th><th>notebook tests (nbgrader)</th>\
<th>hidden checks</th>{by_hand_head}<th>status</th></tr>
<tr><td class=pts>{number(r.total)} / {number(r.max)}</td><td class=pts>{number(r.nbgrader_score)} / \
{number(r.nbgrader_max)}</td><td class=pts>{number(r.hidden_score)} / {number(r.hidden_max)}</td>{by_hand}
<td class=status>{e(r.status)}: {e(STATUSES[r.status])}</td></tr></table>
{zeroed}{f"<ul>{notes}</ul>" if notes else ""}
<h2>Notebook tests</h2>
<p>The test cells of your notebook, run by nbgrader (hidden tests included, and any test cell you changed
or deleted put back as released).</p>
{_rows(r.cells)}
<h2>Hidden checks</h2>
<p>Your graded functions called on new inputs (other shapes, batch sizes, dtypes and edge cases) and compared
with the course's reference.</p>
{_rows(r.checks)}
{_written(r)}</body></html>
"""


def write_feedback(r: StudentResult, folder: str | Path) -> Path:
    path = Path(folder) / f"{r.student}.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(feedback_html(r), encoding="utf-8")
    return path


def plot_distribution(results: list[StudentResult], path: str | Path, lab: str) -> Path:
    """A histogram of the total grade in percent, one bar per 10%; invalid submissions drawn apart."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    graded = [100 * r.total / r.max if r.max else 0.0 for r in results if r.status not in ("invalid", "missing")]
    invalid = sum(r.status == "invalid" for r in results)
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    ax.hist(graded, bins=[0, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100.001], color="#4c72b0", edgecolor="white")
    ax.set_xlabel("total grade (%)")
    ax.set_ylabel("students")
    ax.set_xlim(0, 100)
    mean = f", mean {sum(graded) / len(graded):.0f}%" if graded else ""
    ax.set_title(f"{lab}: {len(graded)} graded{mean}" + (f", {invalid} invalid" if invalid else ""))
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
    return path

"""Find each student's notebook for a lab and copy it into the grading workspace.

Three layouts are understood (the originals are only read, never changed):

- a folder of `<student>.ipynb` files (or of `<student>/` folders holding one notebook each);
- nbgrader's `submitted/<student>/<lab>/<lab>.ipynb` tree (with or without the `submitted/` level);
- an LMS download as a `.zip` (nbgrader `zip_collect` conventions): file names like
  `lab01_alice_attempt_2024-01-30-15-00-00_lab01-attention.ipynb` (Blackboard, nbgrader's docs),
  `alice_12345_678901_lab01-attention.ipynb` (Canvas) or `Alice Liddell_123_assignsubmission_file_/x.ipynb`
  (Moodle); `--name-regex` takes nbgrader's `named_regexp` with `(?P<student_id>...)` for any other LMS.

Zip members are read with size limits and never extracted by path, so `../` names, links and zip bombs
cannot write outside the workspace; links in a submissions folder are refused.
"""
from __future__ import annotations

import re
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

MAX_NOTEBOOK_BYTES = 50 << 20  # a notebook with a few figures is ~1 MB

# Tried in order on a file name (then on its folder's name); nbgrader's `named_regexp` convention.
LMS_PATTERNS = (
    r".*_(?P<student_id>\w+)_attempt_(?P<timestamp>[0-9\-]+)_(?P<file_id>.+)",  # Blackboard (nbgrader docs)
    r"(?P<student_id>[A-Za-z0-9]+)_(?P<late>late_)?(?P<user_id>\d+)_\d+_(?P<file_id>.+)",  # Canvas
    r"(?P<student_id>.+?)_(?P<user_id>\d+)_assignsubmission_(?:file|onlinetext)_(?P<file_id>.*)",  # Moodle
)


@dataclass
class Submission:
    """One student's notebook: `notebook` is the workspace copy, or None with `error` saying why."""

    student: str
    origin: str  # where it came from, for the instructor
    notebook: Path | None = None
    error: str = ""
    lms_user_id: str = ""  # the LMS's own user id, when its file names carry one (Canvas, Moodle)
    late: bool = False  # the LMS marked the submission late (Canvas: `_late_` in the file name)


@dataclass
class _Candidate:
    student: str
    origin: str
    file_id: str
    timestamp: str
    read: Callable[[], bytes]
    lms_user_id: str = ""
    late: bool = False


def safe_student_id(raw: str) -> str:
    """A student id usable as a folder name and a CSV cell: letters, digits and `_.@+-` only."""
    cleaned = re.sub(r"[^A-Za-z0-9_.@+-]+", "_", raw.strip()).strip("._-+@")
    return cleaned[:64] or "unnamed"


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MB"


def _read_file(path: Path) -> Callable[[], bytes]:
    def read() -> bytes:
        if path.is_symlink():
            raise ValueError(f"{path.name} is a symbolic link; submit the notebook file itself")
        if path.stat().st_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{path.name} is {_mb(path.stat().st_size)} (limit {_mb(MAX_NOTEBOOK_BYTES)})")
        return path.read_bytes()
    return read


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Callable[[], bytes]:
    def read() -> bytes:
        if info.file_size > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{info.filename} is {_mb(info.file_size)} (limit {_mb(MAX_NOTEBOOK_BYTES)})")
        with archive.open(info) as f:  # the header's size may lie: read at most one byte past the limit
            data = f.read(MAX_NOTEBOOK_BYTES + 1)
        if len(data) > MAX_NOTEBOOK_BYTES:
            raise ValueError(f"{info.filename} is larger than the limit of {_mb(MAX_NOTEBOOK_BYTES)}")
        return data
    return read


def _ignored(parts: tuple[str, ...]) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in parts) or not parts[-1].endswith(".ipynb")


def _match(name: str, patterns: list[str]) -> dict | None:
    for pattern in patterns:
        m = re.fullmatch(pattern, name, flags=re.IGNORECASE)
        if m and m.groupdict().get("student_id"):
            return m.groupdict()
    return None


def _classify(parts: tuple[str, ...], lab: str, patterns: list[str]) -> tuple[str, str, str, dict] | None:
    """(student, file_id, timestamp, LMS fields) for a notebook at relative path `parts`, or None for another
    lab's file; the LMS fields are the matched pattern's groups (user_id, late), empty when none matched."""
    name = parts[-1]
    stem = name[: -len(".ipynb")]
    if "submitted" in parts[:-1]:  # nbgrader: .../submitted/<student>/<lab>/<notebook>.ipynb
        i = parts.index("submitted")
        if len(parts) != i + 4 or parts[i + 2] != lab:
            return None
        return parts[i + 1], stem, "", {}
    if len(parts) == 3 and parts[1] == lab:  # nbgrader's tree without the submitted/ level
        return parts[0], stem, "", {}
    if len(parts) == 1:  # a flat file: an LMS name, else <student>.ipynb
        m = _match(name, patterns)
        if m:
            return m["student_id"], (m.get("file_id") or stem).removesuffix(".ipynb"), m.get("timestamp") or "", m
        return stem, stem, "", {}
    m = _match(parts[0], patterns) or _match(parts[0] + "_", patterns)  # Moodle: one folder per student
    return (m["student_id"] if m else parts[0]), stem, (m or {}).get("timestamp") or "", m or {}


def _candidates(files: dict[tuple[str, ...], tuple[str, Callable[[], bytes]]], lab: str,
                patterns: list[str]) -> list[_Candidate]:
    kept = {parts: v for parts, v in files.items() if not _ignored(parts)}
    # drop wrapper folders shared by every file (a zip of "submissions/..."), but not a lone student's folder
    while kept and "submitted" not in {p[0] for p in kept} and len({p[0] for p in kept}) == 1 \
            and all(len(p) > 1 for p in kept):
        inner = [p[1:] for p in kept]
        if not (any(len(p) == 1 for p in inner) or len({p[0] for p in inner}) > 1 or inner[0][0] == "submitted"):
            break
        kept = {p[1:]: v for p, v in kept.items()}
    for nbgrader_tree in (lambda p: "submitted" in p[:-1], lambda p: len(p) == 3 and p[1] == lab):
        if any(map(nbgrader_tree, kept)):  # an nbgrader tree: nothing outside it is a submission
            kept = {p: v for p, v in kept.items() if nbgrader_tree(p)}
            break
    out = []
    for parts, (origin, read) in sorted(kept.items()):
        found = _classify(parts, lab, patterns)
        if found:
            student, file_id, timestamp, lms = found
            out.append(_Candidate(safe_student_id(student), origin, file_id, timestamp, read,
                                  lms_user_id=safe_student_id(lms["user_id"]) if lms.get("user_id") else "",
                                  late=bool(lms.get("late"))))
    return out


def _choose(student: str, group: list[_Candidate], lab: str) -> tuple[_Candidate | None, str]:
    """The one notebook to grade for a student: the latest attempt, else the one named after the lab."""
    if len(group) == 1:
        return group[0], ""
    if all(c.timestamp for c in group):
        latest = max(c.timestamp for c in group)
        group = [c for c in group if c.timestamp == latest]
    named = [c for c in group if c.file_id == lab or c.file_id.endswith(lab)]
    if len(named) == 1 or len(group) == 1:
        return (named or group)[0], ""
    names = ", ".join(c.origin for c in group)
    return None, f"several notebooks for student {student} ({names}); keep one, named {lab}.ipynb"


def collect_submissions(source: str | Path, lab: str, inbox: str | Path,
                        name_regex: str | None = None) -> list[Submission]:
    """Copy every student's notebook for `lab` from `source` (folder or .zip) to `inbox/<student>.ipynb`.

    Returns one Submission per student, sorted by id; problems (several notebooks, too large, a link)
    give a Submission with `error` set and no notebook, so the student still gets a row in the grades.
    """
    source, inbox = Path(source), Path(inbox)
    if name_regex and "(?P<student_id>" not in name_regex:
        raise ValueError("--name-regex needs a (?P<student_id>...) group (nbgrader's named_regexp convention)")
    patterns = ([name_regex] if name_regex else []) + list(LMS_PATTERNS)
    archive = None
    if source.is_file() and zipfile.is_zipfile(source):
        archive = zipfile.ZipFile(source)
        files = {PurePosixPath(i.filename).parts: (i.filename, _read_member(archive, i))
                 for i in archive.infolist() if not i.is_dir() and not PurePosixPath(i.filename).is_absolute()
                 and ".." not in PurePosixPath(i.filename).parts}
    elif source.is_dir():
        files = {p.relative_to(source).parts: (str(p.relative_to(source)), _read_file(p))
                 for p in source.rglob("*.ipynb") if p.is_file() or p.is_symlink()}
    else:
        raise FileNotFoundError(f"submissions not found: {source} is neither a folder nor a .zip file")
    try:
        groups: dict[str, list[_Candidate]] = {}
        for c in _candidates(files, lab, patterns):
            groups.setdefault(c.student, []).append(c)
        inbox.mkdir(parents=True, exist_ok=True)
        result = []
        for student in sorted(groups):
            chosen, error = _choose(student, groups[student], lab)
            first = chosen or groups[student][0]
            sub = Submission(student, first.origin, error=error, lms_user_id=first.lms_user_id, late=first.late)
            if chosen:
                try:
                    data = chosen.read()
                except (OSError, ValueError, zipfile.BadZipFile) as exc:
                    sub.error = f"cannot read {chosen.origin}: {exc}"
                else:
                    sub.notebook = inbox / f"{student}.ipynb"
                    sub.notebook.write_bytes(data)
            result.append(sub)
        return result
    finally:
        if archive is not None:
            archive.close()


ROSTER_ID_COLUMNS = ("student_id", "login", "sis login id", "login_id", "username", "email", "student")
ROSTER_LMS_COLUMNS = ("lms_user_id", "user_id", "id", "sis user id")


def read_roster(path: str | Path) -> dict[str, str]:
    """{student id: LMS user id ("" if none)} from a roster CSV (a header row, then one row per student).

    The student id is the first of the columns `student_id`, `login`, `SIS Login ID`, `login_id`, `username`,
    `email`, `student` (case does not matter; ids are cleaned as submission ids are); the LMS user id the first
    of `lms_user_id`, `user_id`, `ID`, `SIS User ID`. Rows without an id (Canvas's "Points Possible") are skipped.
    """
    import csv

    with Path(path).open(newline="", encoding="utf-8-sig") as f:
        rows = list(csv.DictReader(f))
        header = {name.strip().lower(): name for name in (rows[0].keys() if rows else [])}
    id_column = next((header[c] for c in ROSTER_ID_COLUMNS if c in header), None)
    if id_column is None:
        raise ValueError(f"the roster {path} has no student id column (one of {', '.join(ROSTER_ID_COLUMNS)})")
    lms_column = next((header[c] for c in ROSTER_LMS_COLUMNS if c in header and header[c] != id_column), None)
    roster: dict[str, str] = {}
    for row in rows:
        raw = (row.get(id_column) or "").strip()
        if not raw or raw.lower() == "points possible":
            continue
        lms = (row.get(lms_column) or "").strip() if lms_column else ""
        roster[safe_student_id(raw)] = safe_student_id(lms) if lms else ""
    return roster

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
    r"(?P<student_id>[A-Za-z0-9]+)_(?:late_)?\d+_\d+_(?P<file_id>.+)",  # Canvas
    r"(?P<student_id>.+?)_\d+_assignsubmission_(?:file|onlinetext)_(?P<file_id>.*)",  # Moodle
)


@dataclass
class Submission:
    """One student's notebook: `notebook` is the workspace copy, or None with `error` saying why."""

    student: str
    origin: str  # where it came from, for the instructor
    notebook: Path | None = None
    error: str = ""


@dataclass
class _Candidate:
    student: str
    origin: str
    file_id: str
    timestamp: str
    read: Callable[[], bytes]


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


def _classify(parts: tuple[str, ...], lab: str, patterns: list[str]) -> tuple[str, str, str] | None:
    """(student, file_id, timestamp) for a notebook at relative path `parts`, or None for another lab's file."""
    name = parts[-1]
    stem = name[: -len(".ipynb")]
    if "submitted" in parts[:-1]:  # nbgrader: .../submitted/<student>/<lab>/<notebook>.ipynb
        i = parts.index("submitted")
        if len(parts) != i + 4 or parts[i + 2] != lab:
            return None
        return parts[i + 1], stem, ""
    if len(parts) == 3 and parts[1] == lab:  # nbgrader's tree without the submitted/ level
        return parts[0], stem, ""
    if len(parts) == 1:  # a flat file: an LMS name, else <student>.ipynb
        m = _match(name, patterns)
        if m:
            return m["student_id"], (m.get("file_id") or stem).removesuffix(".ipynb"), m.get("timestamp") or ""
        return stem, stem, ""
    m = _match(parts[0], patterns) or _match(parts[0] + "_", patterns)  # Moodle: one folder per student
    return (m["student_id"] if m else parts[0]), stem, (m or {}).get("timestamp") or ""


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
            student, file_id, timestamp = found
            out.append(_Candidate(safe_student_id(student), origin, file_id, timestamp, read))
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
            sub = Submission(student, chosen.origin if chosen else groups[student][0].origin, error=error)
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

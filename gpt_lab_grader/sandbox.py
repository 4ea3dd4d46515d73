"""Run a student's graded definitions in a separate, limited process and talk to it over a pipe.

The grading process (pytest running the hidden checks) never executes student code. It starts a
child `python -I` (isolated mode) running `_child_main`, which

- runs inside bubblewrap (`confine.py`): a read-only system, no network, its own PID namespace, a
  fresh scratch directory that holds only a copy of the notebook as its one writable folder (HOME
  points there too), CPU-time, process and file-size limits,
- runs on the CPU with one thread, under an address-space limit (RLIMIT_AS) and an output cap
  (stdout/stderr go to a file limited by RLIMIT_FSIZE),
- installs the audit hook (`confine.install_guard`) before any student code runs: touching the
  course's `solutions/` and `tests/`, the hidden checks, any `gradebook*.db` or the extra `deny`
  paths is refused with a clear message, and so are subprocesses, `os.system`, `fork`, `kill`,
  sockets, `ctypes` and `setrlimit`,
- executes the notebook's definitions (see `submission.extract_definitions`),
- wraps gpt_lab's reference implementations of the graded names (the *tripwire*): a call to one
  of them while a student function runs makes that call fail ("calls gpt_lab.x instead of
  implementing it"); so does running a copy of one made at run time from gpt_lab's source or
  bytecode (the *copy watch*, a trace function set while a graded function runs; see borrowing.py).

Requests and results cross the pipe as `torch.save` bytes and are read with
`torch.load(weights_only=True)`, and results are type-checked again in the parent: only plain
tensors, numbers, strings, None and tuples/lists/dicts of them come back, so an object with a
custom `__eq__` can never pose as a correct answer. The audit hook is defence in depth, not a
jail: bubblewrap, the process limits and the pipe are what the grader relies on.
"""
from __future__ import annotations

import io
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from gpt_lab_grader.confine import (Confinement, GuardError, Limits, apply_limits, install_guard, protected_paths,
                                    read_only_paths)

_HEADER = struct.Struct("<Q")
MAX_MESSAGE = 512 * 2**20  # a result bigger than this is refused


# ---------------------------------------------------------------------------------------------
# Errors: every one is an AssertionError, so a check that meets one fails with its message.


class SandboxError(AssertionError):
    """Running the student's code did not produce a usable result."""


class MissingDefinition(SandboxError):
    """The graded name is not defined by the notebook."""


class StudentError(SandboxError):
    """The student's code raised an exception."""


class CallTimeout(SandboxError):
    """The call ran past its wall-clock limit."""


class Crashed(SandboxError):
    """The child process died (os._exit, a signal, the memory limit)."""


class OutputLimit(SandboxError):
    """The code printed more than the output cap."""


class ForbiddenOperation(SandboxError):
    """The code tried something the grader does not allow (reading the tests, a subprocess, ...)."""


class BadResult(SandboxError):
    """The result is not a plain tensor / number / container of those."""


class ReferenceCall(SandboxError):
    """The graded function called gpt_lab's reference instead of implementing it."""


ERRORS = {cls.__name__: cls for cls in (SandboxError, MissingDefinition, StudentError, CallTimeout, Crashed,
                                         OutputLimit, ForbiddenOperation, BadResult, ReferenceCall)}


# ---------------------------------------------------------------------------------------------
# Wire format, shared by both sides.


def _dump(obj) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _load(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True, map_location="cpu")


def _write_message(fd: int, payload: bytes) -> None:
    data = _HEADER.pack(len(payload)) + payload
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def plain(value, where: str = "the result"):
    """`value` with only plain types (exact torch.Tensor, numbers, str, None, tuple/list/dict), else BadResult.

    nn.Parameters become plain detached tensors, tuple subclasses (torch.return_types) plain tuples,
    torch.Size a tuple; tensors are detached and moved to the CPU.
    """
    import torch

    if type(value) is torch.Tensor or type(value) is torch.nn.Parameter:
        return value.detach().cpu().clone()
    if isinstance(value, torch.Tensor):
        raise BadResult(f"{where} is a {type(value).__qualname__}, a subclass of torch.Tensor: "
                        "return a plain torch.Tensor")
    if value is None or type(value) in (bool, int, float, str):
        return value
    if type(value) is torch.dtype:
        return value
    if type(value) is torch.device:
        return str(value)
    if isinstance(value, tuple):
        return tuple(plain(v, f"{where}[{i}]") for i, v in enumerate(value))
    if type(value) is list:
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and type(value).__module__ in ("builtins", "collections"):
        if not all(type(k) in (str, int) for k in value):
            raise BadResult(f"{where} is a dict with keys that are not strings or integers")
        return {k: plain(v, f"{where}[{k!r}]") for k, v in value.items()}
    kind = f"{type(value).__module__}.{type(value).__qualname__}"
    raise BadResult(f"{where} is a {kind}; expected a torch.Tensor, a Python number, or a tuple/list of those")


# ---------------------------------------------------------------------------------------------
# Parent side.


class Sandbox:
    """The student's graded definitions, callable from the grading process.

    `lab` names an entry of `gpt_lab_grader.labs.LABS` (graded names, references for the
    tripwire, scenario module, per-call limit). The child starts on first use and is restarted
    after a timeout or crash; a name (or scenario) that timed out or crashed fails at once on
    later calls, so one infinite loop costs one time limit, not one per check.

    `course`: the course folder, whose solutions/ and tests/ the audit hook names (bubblewrap does not
    mount them at all); `deny`: more paths for the hook; `sandboxed=False` runs without bubblewrap.
    """

    def __init__(self, notebook: str | os.PathLike, lab: str, limits: Limits | None = None,
                 deny: Sequence[str | os.PathLike] = (), deadline: float | None = None,
                 course: str | os.PathLike | None = None, sandboxed: bool = True, cpu_budget_s: float | None = None):
        from gpt_lab_grader.labs import LABS, resolve_lab
        from gpt_lab_grader.submission import read_notebook

        self.spec = LABS[resolve_lab(lab)]
        self.limits = limits or Limits(call_timeout_s=self.spec.call_timeout_s)
        self.notebook = Path(notebook)
        read_notebook(self.notebook)  # SubmissionError now, not in the child
        self.deny = [str(Path(p).resolve()) for p in (*protected_paths(course), *deny)]
        self.read_only = read_only_paths(course)
        self.sandboxed = sandboxed
        self._dir = Path(tempfile.mkdtemp(prefix="gpt_lab_sandbox_"))
        self._proc: subprocess.Popen | None = None
        self._sticky: dict[str, SandboxError] = {}
        self.found: list[str] = []
        self.missing: dict[str, str] = {}
        self.startup_error: SandboxError | None = None
        self.starts = 0
        self.deadline = deadline  # time.time() after which every call fails at once (wall backstop of a whole run)
        self.cpu_budget_s = cpu_budget_s  # CPU seconds of student code for the whole run (all children)
        self.cpu_used_s = 0.0  # CPU seconds the earlier children used (the current one reports its own)
        self._cpu_now = 0.0

    # -- lifecycle

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._kill()
        shutil.rmtree(self._dir, ignore_errors=True)

    def _kill(self) -> None:
        if self._proc is None:
            return
        self.cpu_used_s += self._cpu_now
        self._cpu_now = 0.0
        if self._proc.poll() is None:
            try:
                os.killpg(self._proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._output.close()
        self._proc = None

    def _start(self) -> None:
        scratch = self._dir / f"run{self.starts}"
        scratch.mkdir()
        shutil.copyfile(self.notebook, scratch / "submission.ipynb")
        self.starts += 1
        req_r, req_w = os.pipe()
        res_r, res_w = os.pipe()
        self._output = open(self._dir / f"output{self.starts}.log", "wb")
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(scratch), "TMPDIR": str(scratch),
               "CUDA_VISIBLE_DEVICES": "", "GPT_LAB_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
               "GPT_LAB_PROGRESS": "0", "GPT_LAB_FAST": "1", "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1",
               "MPLCONFIGDIR": str(scratch / "matplotlib")}
        confinement = Confinement(scratch, self.limits, sandboxed=self.sandboxed)
        confinement.prepare()
        argv = [sys.executable, "-I", "-u", "-c", f"from gpt_lab_grader.sandbox import _child_main; "
                f"_child_main({req_r}, {res_w})"]
        self._proc = subprocess.Popen(
            confinement.command(argv), cwd=scratch, env=env, stdin=subprocess.DEVNULL, stdout=self._output,
            stderr=subprocess.STDOUT, pass_fds=(req_r, res_w), start_new_session=True,
            preexec_fn=confinement.preexec())
        os.close(req_r)
        os.close(res_w)
        self._to_child, self._from_child = req_w, res_r
        init = {"op": "init", "notebook": "submission.ipynb", "names": list(self.spec.graded),
                "references": dict(self.spec.references), "forbidden": list(self.spec.forbidden),
                "scenario_module": self.spec.scenario_module, "deny": self.deny,
                "read_only": self.read_only, "writable": [str(scratch.resolve())],
                "memory_mb": int(self.limits.memory_mb), "output_bytes": int(self.limits.output_bytes),
                "cpu_s": int(self.limits.cpu_s), "processes": int(self.limits.processes),
                "call_cpu_s": float(self.limits.call_timeout_s)}
        reply = self._request(init, "loading the notebook's definitions", timeout_s=self._wall(30))
        self.found, self.missing = list(reply["found"]), dict(reply["missing"])

    def _ensure_started(self) -> None:
        if self.startup_error is not None:
            raise self.startup_error
        if self._proc is None or self._proc.poll() is not None:
            self._kill()
            try:
                self._start()
            except SandboxError as exc:
                self._kill()
                self.startup_error = type(exc)(f"{exc} (while loading the notebook's definitions, so no graded "
                                                "function could be checked)")
                raise self.startup_error from None

    # -- calls

    def call(self, name: str, *args, **kwargs):
        """`name(*args, **kwargs)` in the child; the result as plain tensors/numbers."""
        if name not in self.spec.graded:
            raise ValueError(f"{name!r} is not a graded name of {self.spec.lab}: {', '.join(self.spec.graded)}")
        if name in self._sticky:
            raise self._sticky[name]
        self._ensure_started()
        if name in self.missing:
            raise MissingDefinition(self.missing[name])
        return self._guarded(name, {"op": "call", "name": name, "args": args, "kwargs": kwargs}, f"`{name}`")

    def scenario(self, name: str, **kwargs):
        """Run the scenario `name` of the lab's scenario module with the student's definitions."""
        key = f"scenario:{name}"
        if key in self._sticky:
            raise self._sticky[key]
        self._ensure_started()
        return self._guarded(key, {"op": "scenario", "name": name, "kwargs": kwargs}, f"scenario {name!r}")

    def _guarded(self, key: str, message: dict, what: str):
        try:
            return self._request(message, what)
        except (CallTimeout, Crashed) as exc:
            self._kill()
            self._sticky[key] = exc
            raise

    def _wall(self, extra_cpu_s: float = 0.0) -> float:
        """The wall-clock backstop of one request whose CPU limit is the per-call limit (+ `extra_cpu_s`)."""
        return (self.limits.call_timeout_s + extra_cpu_s) * self.limits.wall_factor + 30

    def _request(self, message: dict, what: str, timeout_s: float | None = None):
        timeout_s = self._wall() if timeout_s is None else timeout_s
        if self.cpu_budget_s is not None and self.cpu_used_s + self._cpu_now >= self.cpu_budget_s:
            raise CallTimeout(f"{what} was not run: the {self.cpu_budget_s:g} CPU seconds for all checks ran out")
        if self.deadline is not None:
            left = self.deadline - time.time()
            if left <= 0:
                raise CallTimeout(f"{what} was not run: the time limit for all checks ran out")
            timeout_s = min(timeout_s, left)
        try:
            _write_message(self._to_child, _dump(message))
        except (BrokenPipeError, OSError):
            raise self._crash(what) from None
        payload = self._read(timeout_s, what)
        try:
            reply = _load(payload)
        except Exception as exc:  # the child only ever sends plain data: anything else is tampering
            raise BadResult(f"{what}: the result could not be read safely ({type(exc).__name__})") from None
        if not isinstance(reply, dict) or "ok" not in reply:
            raise BadResult(f"{what}: malformed reply from the grading process")
        if isinstance(reply.get("cpu"), float):
            self._cpu_now = reply["cpu"]
        if not reply["ok"]:
            raise ERRORS.get(reply.get("error"), SandboxError)(str(reply.get("message", "")))
        return plain(reply.get("value"), "the result")

    def _read(self, timeout_s: float, what: str) -> bytes:
        deadline = time.monotonic() + timeout_s
        header = self._read_exactly(_HEADER.size, deadline, what, timeout_s)
        (size,) = _HEADER.unpack(header)
        if size > MAX_MESSAGE:
            self._kill()
            raise BadResult(f"{what}: the result is larger than {MAX_MESSAGE // 2**20} MB")
        return self._read_exactly(size, deadline, what, timeout_s)

    def _read_exactly(self, n: int, deadline: float, what: str, timeout_s: float) -> bytes:
        chunks, got = [], 0
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child], [], [], left)[0]:
                raise CallTimeout(f"{what} did not finish within {timeout_s:.3g} s of wall-clock time "
                                  "(an infinite loop? a very slow implementation?)")
            chunk = os.read(self._from_child, min(n - got, 1 << 20))
            if not chunk:
                raise self._crash(what)
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _crash(self, what: str) -> Crashed:
        try:
            code = self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        if code is not None and code < 0:
            sig = signal.Signals(-code).name
            hint = {"SIGKILL": f" (out of memory? the limit is {self.limits.memory_mb} MB)",
                    "SIGSEGV": " (a segmentation fault)"}.get(sig, "")
            return Crashed(f"the grading process died with {sig} while running {what}{hint}")
        return Crashed(f"the grading process exited (status {code}) while running {what}: "
                       "does your code call sys.exit, os._exit or quit?")

    @property
    def output(self) -> str:
        """What the student's code printed in the current child (capped)."""
        path = self._dir / f"output{self.starts}.log"
        return path.read_text(errors="replace") if path.exists() else ""


# ---------------------------------------------------------------------------------------------
# Child side.


class _State:
    def __init__(self):
        self.active: list[str] = []      # graded functions running now (innermost last)
        self.flagged: list[str] = []     # tripwire hits during the current request
        self.violations: list[str] = []  # guard refusals during the current request


def _child_main(fd_in: int, fd_out: int) -> None:
    import ast
    import builtins
    import functools
    import importlib
    import linecache
    import threading
    import traceback
    import types

    import torch

    import gpt_lab.attention, gpt_lab.data, gpt_lab.model, gpt_lab.train  # noqa: F401,E401
    from gpt_lab_grader.borrowing import CopyWatch, install_tripwire, loaded_sources
    from gpt_lab_grader.labs import scenarios as scenario_registry
    from gpt_lab_grader.submission import extract_definitions

    torch.set_num_threads(1)
    state = _State()
    reader = os.fdopen(fd_in, "rb", buffering=0)

    def read_exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = reader.read(n - len(data))
            if not chunk:  # the grader closed the pipe: we are done
                os._exit(0)
            data += chunk
        return data

    def receive():
        (size,) = _HEADER.unpack(read_exactly(_HEADER.size))
        return _load(read_exactly(size))

    replying = threading.Lock()
    running: dict = {}  # the request in progress: {"what": ..., "start": CPU seconds at its start}

    def reply(**fields) -> None:
        with replying:
            running.clear()
            fields["cpu"] = float(time.process_time())
            try:
                payload = _dump(fields)
            except Exception as exc:
                payload = _dump({"ok": False, "error": "BadResult", "cpu": fields["cpu"],
                                 "message": f"the result cannot be sent back ({exc})"})
            _write_message(fd_out, payload)

    def watchdog(limit_s: float) -> None:
        """Stop a request that used more than `limit_s` CPU seconds: reply CallTimeout, then exit (the grader
        starts a fresh child). CPU time, not wall time: a loaded machine does not change the grade."""
        while True:
            time.sleep(0.05)
            current = dict(running)
            if current and time.process_time() - current["start"] > limit_s and replying.acquire(blocking=False):
                if running.get("start") == current["start"]:
                    _write_message(fd_out, _dump({
                        "ok": False, "error": "CallTimeout", "cpu": float(time.process_time()),
                        "message": f"{current['what']} did not finish within {limit_s:g} CPU seconds "
                                   "(an infinite loop? a very slow implementation?)"}))
                    os._exit(0)
                replying.release()

    init = receive()
    limit_s = float(init.get("call_cpu_s", 30.0))
    threading.Thread(target=watchdog, args=(limit_s,), daemon=True, name="gpt-lab-watchdog").start()
    # -- the tripwire: each reference reports when it runs, through any alias (borrowing.py)

    def hit(label: str) -> None:
        if state.active:
            state.flagged.append(f"`{state.active[-1]}` calls {label} instead of implementing it")

    targets = [*init["references"].values(), *init["forbidden"]]
    watch = CopyWatch(targets, hit)  # copies made at run time: it must see the references' code first
    trace = watch.trace  # one bound method, so that `sys.gettrace() is trace` holds
    install_tripwire(targets, hit)
    importlib.import_module(init["scenario_module"])
    threading.settrace(trace)  # threads the student's code starts are watched too

    def student(name: str, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            state.active.append(name)
            outer = sys.gettrace()
            sys.settrace(trace)
            try:
                return fn(*args, **kwargs)
            finally:
                if sys.gettrace() is not trace:  # a debugger, or a way around the copy watch: for review
                    state.flagged.append(f"`{name}` replaced the grader's trace function (sys.settrace), which "
                                         "watches for copies of gpt_lab's reference")
                sys.settrace(outer)
                state.active.pop()
        return wrapper

    # -- limits, then the guard: no student code has run yet

    apply_limits(init["memory_mb"], init["output_bytes"], init["cpu_s"], init["processes"])
    install_guard(init["deny"], log=state.violations.append, no_rerun=loaded_sources(("gpt_lab",)),
                  read_only=init["read_only"], writable=init["writable"])

    names = list(init["names"])
    running.update(what="loading the notebook's definitions", start=time.process_time() + 30.0)  # 30 s more
    extraction = extract_definitions(init["notebook"], names)
    namespace: dict = {"__name__": "__main__", "__builtins__": builtins}
    missing = dict(extraction.missing)

    def describe(exc: BaseException) -> str:
        """'ValueError: msg (cell 3, line 7: `code`)' with the innermost frame in the student's cells."""
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell ")]
        where = ""
        if frames:
            f = frames[-1]
            line = (f.line or "").strip()
            cell = int(f.filename[len("<cell "):-1]) + 1  # 1-based, counting every cell of the notebook
            where = f" (cell {cell}, line {f.lineno}" + (f": `{line[:120]}`)" if line else ")")
        text = str(exc).strip()
        if len(text) > 400:
            text = text[:400] + " ..."
        return f"{type(exc).__name__}{': ' + text if text else ''}{where}"

    def classify(exc: BaseException, what: str) -> dict:
        if isinstance(exc, GuardError) or state.violations:
            done = state.violations[0] if state.violations else str(exc)
            return {"error": "ForbiddenOperation", "message": f"{what}: the grader does not allow {done}"}
        if isinstance(exc, OSError) and exc.errno == 27:  # EFBIG: past the output cap
            return {"error": "OutputLimit", "message": f"{what} printed more than {init['output_bytes']} bytes"}
        if isinstance(exc, MemoryError) or "can't allocate memory" in str(exc):
            return {"error": "StudentError",
                    "message": f"{what} ran out of memory (the limit is {init['memory_mb']} MB)"}
        if isinstance(exc, SandboxError):
            return {"error": type(exc).__name__, "message": str(exc)}
        message = f"{what} raised {describe(exc)}"
        if isinstance(exc, NameError):
            message += (" -- note: the grader runs only your imports, function/class definitions and constants, "
                        "not other top-level code; define what your function needs inside it or as a constant")
        return {"error": "StudentError", "message": message}

    for index, code, tree in extraction.cells:
        filename = f"<cell {index}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        for stmt in tree.body:
            try:
                compiled = compile(ast.Module(body=[stmt], type_ignores=[]), filename, "exec")
                watch.own(compiled)  # the notebook's own code: a pasted copy is the AST match's business
                exec(compiled, namespace)
            except BaseException as exc:  # noqa: BLE001 (a definition failing must not stop the others)
                for name in names:
                    if extraction.found.get(name) == index and name not in namespace:
                        missing[name] = f"`{name}` could not be defined: its cell raised {describe(exc)}"
                state.violations.clear()
    for name in names:
        if name not in namespace and name not in missing:
            missing[name] = extraction.missing.get(name, f"`{name}` is not defined by the notebook")
        if name in namespace and name not in missing:
            obj = namespace[name]
            if isinstance(obj, type):
                for attr, value in list(vars(obj).items()):
                    if isinstance(value, types.FunctionType):
                        setattr(obj, attr, student(f"{name}.{attr}", value))
            elif callable(obj):
                namespace[name] = student(name, obj)

    class Impl(types.SimpleNamespace):
        def __getattr__(self, name):
            if name in missing:
                raise MissingDefinition(missing[name])
            raise AttributeError(name)

    impl = Impl(**{n: namespace[n] for n in names if n not in missing})
    reply(ok=True, value={"found": [n for n in names if n not in missing], "missing": missing})

    while True:
        request = receive()
        state.flagged.clear()
        state.violations.clear()
        state.active.clear()
        if request["op"] == "call":
            what = f"your `{request['name']}`"
            run = functools.partial(lambda r: getattr(impl, r["name"])(*r["args"], **r["kwargs"]), request)
        else:
            fn = scenario_registry.SCENARIOS.get(request["name"])
            if fn is None:
                reply(ok=False, error="SandboxError", message=f"unknown scenario {request['name']!r}")
                continue
            what = f"your code, in the check '{scenario_registry.describe(request['name'])}',"
            run = functools.partial(fn, impl, **request["kwargs"])
        running.update(what=what, start=time.process_time())
        try:
            value = plain(run())
        except BaseException as exc:  # noqa: BLE001 (SystemExit and KeyboardInterrupt included)
            reply(ok=False, **classify(exc, what))
            continue
        if state.violations:
            reply(ok=False, error="ForbiddenOperation",
                  message=f"{what}: the grader does not allow {state.violations[0]}")
        elif state.flagged:
            reply(ok=False, error="ReferenceCall", message=state.flagged[0])
        else:
            reply(ok=True, value=value)


"""The sandbox base: how every run of student code is confined, shared by the notebook kernel and the
hidden checks' child process.

Two layers:

1. The operating system (bubblewrap, `bwrap`). The student's process sees a read-only view of the
   system (/usr, /etc), the Python installation, the virtual environment and the two packages it imports
   (`gpt_lab`, `gpt_lab_grader` with every lab's hidden `checks.py` masked), one private writable
   workspace, and nothing else: not the course folder (solutions/, tests/), not the grading outputs, not
   other students' workspaces, not $HOME. It has no network (--unshare-net), its own PID namespace, and
   dies with the grader (--die-with-parent). Run as root, it also drops to a user id of its own, so the
   process limit counts its processes only. Limits (a preexec, before bwrap): CPU seconds, number of
   processes, size of any file written, no core dumps; the address space is limited by the trusted code
   in the child itself, after its imports and before any student code.
2. The audit hook (PEP 578, `install_guard`): turns a denied action into a clear message ("the grader
   does not allow open .../solutions/..."), and refuses subprocesses, ctypes and setrlimit outright.
   Python's documentation says an audit hook is not a sandbox: it is the second layer, not the wall.

`bwrap_problem()` says why bubblewrap cannot run here (None when it can); `gpt-lab-grade` stops on it
unless `--unsandboxed` is given.
"""
from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path

GRADEBOOK_PATTERN = "gradebook*.db*"
SYSTEM_DIRS = ("/usr", "/etc", "/opt")
SYSTEM_LINKS = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
UID_BASE = 1_000_000  # run as root: the sandbox drops to UID_BASE + pid of its launcher (unique while it runs)


WALL_FACTOR = 10.0  # wall-clock backstops are this many times the CPU-time limits (a loaded machine is slow)


@dataclass(frozen=True)
class Limits:
    """Limits of one sandboxed process: CPU seconds per call (a wall-clock backstop of `wall_factor` times
    that), address space, printed output, CPU seconds for its whole life, processes (threads count too),
    and the largest file it may write. Limits count CPU time, not wall time, so grades do not depend on
    how loaded the machine is."""

    call_timeout_s: float = 30.0
    wall_factor: float = WALL_FACTOR
    memory_mb: int = 4096
    output_bytes: int = 1_000_000
    cpu_s: int = 900
    processes: int = 256
    file_bytes: int = 512 * 2**20


@dataclass(frozen=True)
class Confinement:
    """Where one run of student code may write, what it must not touch, and whether bubblewrap is used.

    `workspace`: the one writable folder (mounted at the same path). `writable`: more folders of the same
    student (the kernel's runtime folder). `deny`: paths the audit hook refuses (for clear messages; with
    bubblewrap they are not mounted at all). `sandboxed`: False only when the instructor said --unsandboxed.
    """

    workspace: Path
    limits: Limits = field(default_factory=Limits)
    writable: tuple[Path, ...] = ()
    deny: tuple[str, ...] = ()
    sandboxed: bool = True

    def command(self, argv: Sequence[str]) -> list[str]:
        """`argv` wrapped in bubblewrap (or as is, unsandboxed)."""
        return bwrap_command(argv, [self.workspace, *self.writable]) if self.sandboxed else list(argv)

    def prepare(self) -> None:
        """Make the writable folders the sandbox's own (run as root, it runs under a user id of its own)."""
        if self.sandboxed and os.geteuid() == 0:
            for folder in (self.workspace, *self.writable):
                _chown_tree(Path(folder), sandbox_uid())

    def preexec(self) -> Callable[[], None]:
        """For subprocess.Popen(preexec_fn=...): limits, and death with the grading process."""
        return functools.partial(preexec_limits, self.limits)


# ---------------------------------------------------------------------------------------------
# Bubblewrap


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """None if bubblewrap can build a sandbox here, else why not (one line for the instructor)."""
    if not sys.platform.startswith("linux"):
        return f"bubblewrap needs Linux (this is {sys.platform})"
    exe = shutil.which("bwrap")
    if exe is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    probe = bwrap_command([sys.executable, "-I", "-c", "import os; print(os.getuid())"], [])
    try:
        proc = subprocess.run(probe, capture_output=True, text=True, timeout=60, preexec_fn=_die_with_parent)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"bubblewrap could not start ({exc})"
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or ["no message"])[-1]
        return f"bubblewrap cannot create a sandbox here ({why}); user namespaces may be disabled"
    return None


def sandbox_uid() -> int:
    """The user id a sandbox started by this process runs under (when the grader runs as root)."""
    return UID_BASE + os.getpid()


def _package_dirs() -> list[Path]:
    import gpt_lab
    import gpt_lab_grader

    return [Path(gpt_lab.__file__).resolve().parent, Path(gpt_lab_grader.__file__).resolve().parent]


def _within(path: Path, roots: Sequence[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def bwrap_command(argv: Sequence[str], writable: Sequence[str | os.PathLike]) -> list[str]:
    """The bubblewrap command line that runs `argv` with read-only system, Python, venv and packages,
    the `writable` folders (same paths), a private /tmp, the hidden checks masked, no network."""
    root = os.geteuid() == 0
    cmd = ["bwrap", "--die-with-parent", "--new-session", "--unshare-ipc", "--unshare-pid", "--unshare-net",
           "--unshare-uts", "--unshare-cgroup-try"]
    if not root:
        cmd.append("--unshare-user")  # unprivileged: the user namespace is what allows the rest
    mounted: list[Path] = []
    for d in SYSTEM_DIRS:
        if os.path.isdir(d):
            cmd += ["--ro-bind", d, d]
            mounted.append(Path(d))
    for link in SYSTEM_LINKS:
        if os.path.islink(link):
            cmd += ["--symlink", os.readlink(link), link]
        elif os.path.isdir(link):
            cmd += ["--ro-bind", link, link]
            mounted.append(Path(link))
    cmd += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp"]
    made: set[Path] = {Path("/"), Path("/tmp"), Path("/proc"), Path("/dev")}

    def bind(kind: str, path: Path) -> None:
        if kind == "--ro-bind" and _within(path, mounted):
            return
        for parent in reversed(path.parents):
            if parent not in made and not _within(parent, mounted):
                cmd.extend(["--perms", "0755", "--dir", str(parent)])  # bwrap would make it 0700
                made.add(parent)
        cmd.extend([kind, str(path), str(path)])
        mounted.append(path)

    python = [Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(), Path(sys.executable).resolve().parent]
    for path in dict.fromkeys([*python, *_package_dirs()]):
        bind("--ro-bind", path)
    for path in writable:
        bind("--bind", Path(path).resolve())
    from gpt_lab_grader.labs import check_files

    for check in check_files():  # the hidden checks, and their compiled copies, are not there
        cmd += ["--ro-bind", "/dev/null", str(check)]
        cache = check.parent / "__pycache__"
        if cache.is_dir():
            cmd += ["--tmpfs", str(cache)]
    if root:  # drop to a user id of its own (no capabilities, counted alone by RLIMIT_NPROC)
        uid = str(sandbox_uid())
        setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
        argv = [setpriv, f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "--no-new-privs", *argv]
    workdir = str(Path(writable[0]).resolve()) if writable else "/tmp"
    return cmd + ["--chdir", workdir, "--", *argv]


def _chown_tree(folder: Path, uid: int) -> None:
    for path in [folder, *folder.rglob("*")]:
        try:
            os.lchown(path, uid, uid)
        except FileNotFoundError:
            pass


# ---------------------------------------------------------------------------------------------
# Process limits


def _die_with_parent() -> None:
    """Linux: get SIGKILL when the process that started this one dies (never orphaned)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def preexec_limits(limits: Limits) -> None:
    """In a child before exec: die with the parent; CPU seconds, file size, no core dumps. (The process
    limit is set inside the sandbox, by `apply_limits`: only there does it count the sandbox's own.)"""
    import resource

    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CPU, (int(limits.cpu_s), int(limits.cpu_s) + 5))
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits.file_bytes), int(limits.file_bytes)))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def apply_limits(memory_mb: int, fsize_bytes: int | None = None, cpu_s: int | None = None,
                 processes: int | None = None) -> None:
    """Limit this process: address space (soft = hard, so it cannot be raised again), size of any
    file it writes (writes past it fail with EFBIG instead of killing the process), CPU seconds, processes
    and threads of its user (in the sandbox: its own); no core dumps."""
    import resource

    if processes is not None:
        resource.setrlimit(resource.RLIMIT_NPROC, (int(processes), int(processes)))
    memory = int(memory_mb) * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    if fsize_bytes is not None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (int(fsize_bytes), int(fsize_bytes)))
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    if cpu_s is not None:
        soft, hard = resource.getrlimit(resource.RLIMIT_CPU)
        cpu = int(cpu_s) if soft == resource.RLIM_INFINITY else min(int(cpu_s), soft)
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 5 if hard == resource.RLIM_INFINITY else hard))


# ---------------------------------------------------------------------------------------------
# The audit hook (second layer)


class GuardError(PermissionError):
    """Raised inside the guarded process when the audit hook refuses an operation."""


PATH_EVENTS = {"open", "os.listdir", "os.scandir", "os.link", "os.symlink", "os.rename", "os.remove", "os.rmdir",
               "os.truncate", "os.chmod", "os.chown", "os.utime", "os.mkdir", "shutil.copyfile", "shutil.copytree",
               "shutil.move", "shutil.rmtree", "shutil.unpack_archive", "sqlite3.connect", "sqlite3.connect/handle",
               "glob.glob", "os.chdir"}
BLOCKED_EVENTS = {"subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork", "os.forkpty",
                  "os.kill", "os.killpg", "signal.pthread_kill", "resource.setrlimit", "resource.prlimit", "pty.spawn",
                  "os.startfile", "webbrowser.open", "_posixsubprocess.fork_exec"}
WRITE_EVENTS = {"os.link", "os.symlink", "os.rename", "os.remove", "os.rmdir", "os.truncate", "os.chmod",
                "os.chown", "os.utime", "os.mkdir", "shutil.copyfile", "shutil.copytree", "shutil.move",
                "shutil.rmtree", "shutil.unpack_archive"}
COPY_EVENTS = {"os.link", "os.symlink", "shutil.copyfile", "shutil.copytree", "shutil.unpack_archive"}
MOVE_EVENTS = {"os.rename", "shutil.move"}
SOCKET_EVENTS = {"socket.__new__", "socket.connect", "socket.bind", "socket.sendto", "socket.getaddrinfo",
                 "ftplib.connect", "http.client.connect", "urllib.Request", "smtplib.connect", "telnetlib.Telnet.open"}


def protected_paths(course: str | os.PathLike | None) -> list[str]:
    """What student code must never touch, for the audit hook: the course's solutions/ and tests/, the
    grader package itself (its hidden checks above all) and gpt_lab's installed files are handled by the
    OS layer (read-only); the hook names the secrets so a denied read gets a clear message."""
    from gpt_lab_grader.labs import check_files

    paths = [str(p) for p in check_files()]
    if course is not None:
        paths += [str(Path(course) / "solutions"), str(Path(course) / "tests")]
    return paths


def read_only_paths(course: str | os.PathLike | None) -> list[str]:
    """What student code may read but never change, for the audit hook: the installed packages
    (`gpt_lab`, `gpt_lab_grader`), the Python environment and the course folder (its workspaces excepted,
    by `install_guard`'s `writable`)."""
    paths = [str(p) for p in _package_dirs()] + [str(Path(sys.prefix).resolve())]
    return paths + ([str(Path(course).resolve())] if course is not None else [])


def install_guard(deny: Sequence[str | os.PathLike] = (), *, allow_sockets: bool = False,
                  log: Callable[[str], None] | None = None, no_rerun: Collection[str] = (),
                  read_only: Sequence[str | os.PathLike] = (), writable: Sequence[str | os.PathLike] = ()) -> None:
    """Install the audit hook (PEP 578) that refuses, from now on, in this process:

    - touching (open, list, link, rename, remove, sqlite3.connect, ...) anything under the paths in
      `deny` or any `gradebook*.db`;
    - subprocesses, os.system, exec/spawn/fork, os.kill, setrlimit, ctypes, and (unless
      `allow_sockets`) sockets and network clients;
    - running again the code of a source file in `no_rerun` (the loaded reference modules: a reload
      would make copies the tripwire does not watch);
    - writing, creating, renaming or removing anything under `read_only` (the installed packages, the
      course folder) that is not under `writable` (the workspace): bubblewrap makes those read-only or
      absent; the hook names the attempt.

    A refused operation raises `GuardError` (a PermissionError) and calls `log("EVENT DETAIL")`.
    An audit hook cannot be removed: call this once, after the imports the process itself needs.
    """
    import fnmatch

    roots = [os.path.realpath(p) for p in deny]
    fixed = [os.path.realpath(p) for p in read_only]
    free = [os.path.realpath(p) for p in writable]
    blocked = BLOCKED_EVENTS | (set() if allow_sockets else SOCKET_EVENTS)
    rerun = frozenset(no_rerun)

    def under(full: str, folders: list[str]) -> bool:
        return any(full == root or full.startswith(root + os.sep) for root in folders)

    def writes(event: str, args: tuple) -> bool:
        if event == "open":
            mode, flags = (args[1] if len(args) > 1 else None), (args[2] if len(args) > 2 else 0)
            if isinstance(mode, str):
                return any(c in mode for c in "wax+")
            return isinstance(flags, int) and bool(flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC
                                                             | os.O_APPEND))
        return event in WRITE_EVENTS

    def read_only_target(path) -> bool:
        if isinstance(path, int) or not fixed:
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        return under(full, fixed) and not under(full, free)

    def denied(path) -> bool:
        if isinstance(path, int):
            return False
        try:
            full = os.path.realpath(os.fsdecode(path))
        except (TypeError, ValueError):
            return False
        if fnmatch.fnmatch(os.path.basename(full), GRADEBOOK_PATTERN):
            return True
        return any(full == root or full.startswith(root + os.sep) for root in roots)

    def refuse(detail: str) -> None:
        if log is not None:
            log(detail)
        raise GuardError(f"the grader does not allow {detail}")

    def hook(event: str, args: tuple) -> None:
        if event in PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and denied(arg):
                    refuse(f"{event} {os.fsdecode(arg)}")
            if writes(event, args):
                targets = args[1:2] if event in COPY_EVENTS else args[:2] if event in MOVE_EVENTS else args[:1]
                for arg in targets:
                    if isinstance(arg, (str, bytes, os.PathLike)) and read_only_target(arg):
                        refuse(f"{event} {os.fsdecode(arg)} (writing there)")
        elif event == "exec" and rerun and args and hasattr(args[0], "co_filename"):
            if os.path.realpath(args[0].co_filename) in rerun:
                refuse(f"exec {args[0].co_filename} (running gpt_lab's code again, e.g. importlib.reload)")
        elif event in blocked or event.startswith("ctypes."):
            refuse(event)

    sys.addaudithook(hook)

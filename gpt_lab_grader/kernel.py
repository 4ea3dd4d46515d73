"""The Jupyter kernel that runs a submission during `nbgrader autograde`: ipykernel inside the sandbox
(`confine.py`: bubblewrap, limits, the audit hook), with its printed output capped.

    python -m gpt_lab_grader.kernel --launch -f CONNECTION_FILE   (the argv of the `gpt-lab-guarded` kernelspec)

The grader sets $GPT_LAB_KERNEL_GUARD (JSON: memory_mb, output_bytes, cpu_s, processes, deny, log, home,
runtime, sandboxed). `--launch` runs outside the sandbox (trusted): it opens the guard log, gives the
student's folders to the sandbox's user, limits itself (CPU time, file size, death with the grader) and
executes bubblewrap, which runs this module again without `--launch`, now inside. There the kernel imports
torch and starts ipykernel first (its sockets are Unix sockets in the runtime folder: the sandbox has no
network, so TCP on localhost would not reach it), then limits its address space and processes and arms the
audit hook, so the first line of student code already runs confined. Every denied operation is appended
to the guard log (an inherited file descriptor: the file itself is not mounted), which the grader reads
afterwards (the student's code may catch the PermissionError; the log still says what it tried).
"""
from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from gpt_lab_grader.confine import Confinement, Limits, preexec_limits

KERNEL_NAME = "gpt-lab-guarded"
ENV = "GPT_LAB_KERNEL_GUARD"


def write_kernelspec(folder: str | Path) -> Path:
    """Write `folder/kernels/gpt-lab-guarded/kernel.json`; put `folder` on $JUPYTER_PATH to use it."""
    spec_dir = Path(folder) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "gpt_lab_grader.kernel", "--launch", "-f", "{connection_file}"],
            "display_name": "Python 3 (gpt-lab grading)", "language": "python",
            "env": {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
                    "PYTHONDONTWRITEBYTECODE": "1"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def _limits(settings: dict) -> Limits:
    return Limits(memory_mb=int(settings.get("memory_mb", 4096)),
                  output_bytes=int(settings.get("output_bytes", 1_000_000)),
                  cpu_s=int(settings.get("cpu_s", 900)), processes=int(settings.get("processes", 256)))


def launch(argv: list[str]) -> None:
    """Outside the sandbox: open the guard log, prepare the folders, limit this process, exec bubblewrap."""
    settings = json.loads(os.environ.get(ENV, "{}"))
    if settings.get("log"):
        fd = os.open(settings["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.set_inheritable(fd, True)
        settings["log_fd"] = fd
    writable = tuple(Path(p) for p in (settings.get("runtime"),) if p)
    home = Path(settings.get("home") or os.getcwd())
    if "-f" in argv and writable:  # the client may write the connection file where the sandbox cannot see it
        i = argv.index("-f") + 1
        copy = writable[0] / Path(argv[i]).name
        if Path(argv[i]).resolve() != copy.resolve():
            shutil.copyfile(argv[i], copy)
            argv = [*argv[:i], str(copy), *argv[i + 1:]]
    confinement = Confinement(home, _limits(settings), writable=writable, sandboxed=settings.get("sandboxed", True))
    confinement.prepare()
    os.environ[ENV] = json.dumps(settings)
    os.environ.pop("JPY_PARENT_PID", None)  # its pid is not visible in the sandbox; --die-with-parent does this
    command = confinement.command([sys.executable, "-m", "gpt_lab_grader.kernel", *argv])
    preexec_limits(confinement.limits)
    os.execvp(command[0], command)


def _cap_output(limit: int) -> None:
    """Stop forwarding stdout/stderr to the notebook after `limit` characters (fd-level writes included)."""
    used = [0]

    def capped(write):
        def wrapper(text: str):
            if used[0] >= limit:
                return len(text)
            if used[0] + len(text) > limit:
                write(text[: limit - used[0]] + f"\n[output stopped by the grader after {limit} characters]\n")
                used[0] = limit
                return len(text)
            used[0] += len(text)
            return write(text)
        return wrapper

    for stream in (sys.stdout, sys.stderr):
        stream.write = capped(stream.write)


def _stop_cells_after(shell, cpu_s: float) -> None:
    """Interrupt a cell (KeyboardInterrupt, as nbgrader's own timeout does) once it has used `cpu_s` CPU
    seconds: the per-cell limit counts CPU time, so a loaded machine does not stop a cell that would finish;
    nbgrader's wall-clock timeout stays as a backstop."""
    import _thread
    import threading
    import time

    started: dict = {}

    def watch() -> None:
        while True:
            time.sleep(0.1)
            start = started.get("cpu")
            if start is not None and time.process_time() - start > cpu_s:
                started["cpu"] = time.process_time()  # again after another cpu_s if the interrupt is caught
                _thread.interrupt_main()

    shell.events.register("pre_run_cell", lambda *args: started.update(cpu=time.process_time()))
    shell.events.register("post_run_cell", lambda *args: started.pop("cpu", None))
    threading.Thread(target=watch, daemon=True, name="gpt-lab-cell-watchdog").start()


def main() -> None:
    """Inside the sandbox: start ipykernel, then limit this process and arm the audit hook."""
    if sys.argv[1:2] == ["--launch"]:
        launch(sys.argv[2:])
        return
    settings = json.loads(os.environ.pop(ENV, "{}"))
    import matplotlib.font_manager  # noqa: F401 (reads its font cache; building one would need a subprocess)
    import torch  # and what it loads through ctypes, before the hook forbids ctypes

    import gpt_lab.attention, gpt_lab.data, gpt_lab.model, gpt_lab.train  # noqa: F401,E401
    from gpt_lab_grader.confine import apply_limits, install_guard

    torch.manual_seed(0)
    torch.set_num_threads(1)
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    _cap_output(int(settings.get("output_bytes", 1_000_000)))
    log = os.fdopen(settings["log_fd"], "a", buffering=1) if "log_fd" in settings else None

    def record(message: str) -> None:
        if log is not None:
            log.write(" ".join(message.split())[:500] + "\n")

    if settings.get("cell_cpu_s"):
        _stop_cells_after(app.shell, float(settings["cell_cpu_s"]))
    limits = _limits(settings)
    apply_limits(limits.memory_mb, processes=limits.processes)
    writable = [p for p in (settings.get("home"), settings.get("runtime")) if p]
    install_guard(settings.get("deny", ()), allow_sockets=True, log=record, read_only=settings.get("read_only", ()),
                  writable=writable)
    app.start()


if __name__ == "__main__":
    main()

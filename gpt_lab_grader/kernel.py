"""The Jupyter kernel that runs a submission during `nbgrader autograde`: ipykernel under the same guard as
the hidden-check sandbox (audit hook, address-space limit), with its printed output capped.

    python -m gpt_lab.grading.kernel -f CONNECTION_FILE    (the argv of the `gpt-lab-guarded` kernelspec)

The grader sets $GPT_LAB_KERNEL_GUARD (JSON: memory_mb, output_bytes, deny, log). The kernel imports torch
and starts ipykernel (sockets, connection file) first, then limits itself and arms the hook, so the first
line of student code already runs guarded. Every denied operation is appended to the `log` file, which the
grader reads afterwards (the student's code may catch the PermissionError; the log still says what it tried).
The kernel also dies with the process that started it, so a killed grading job leaves no kernel behind.
"""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

KERNEL_NAME = "gpt-lab-guarded"
ENV = "GPT_LAB_KERNEL_GUARD"


def write_kernelspec(folder: str | Path) -> Path:
    """Write `folder/kernels/gpt-lab-guarded/kernel.json`; put `folder` on $JUPYTER_PATH to use it."""
    spec_dir = Path(folder) / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {"argv": [sys.executable, "-m", "gpt_lab.grading.kernel", "-f", "{connection_file}"],
            "display_name": "Python 3 (gpt-lab grading)", "language": "python",
            "env": {"PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}}
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1))
    return spec_dir


def _die_with_parent() -> None:
    """Linux: SIGKILL this kernel when the grading process that launched it dies."""
    try:
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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


def main() -> None:
    settings = json.loads(os.environ.pop(ENV, "{}"))
    _die_with_parent()
    import matplotlib.font_manager  # noqa: F401 (reads its font cache; building one would need a subprocess)
    import torch  # and what it loads through ctypes, before the hook forbids ctypes

    import gpt_lab.attention, gpt_lab.data, gpt_lab.model, gpt_lab.train  # noqa: F401,E401
    from gpt_lab.grading.sandbox import apply_limits, install_guard

    torch.manual_seed(0)
    torch.set_num_threads(1)
    from ipykernel.kernelapp import IPKernelApp

    app = IPKernelApp.instance()
    app.initialize(sys.argv[1:])
    _cap_output(int(settings.get("output_bytes", 1_000_000)))
    log = open(settings["log"], "a", buffering=1) if settings.get("log") else None  # noqa: SIM115 (kept open)

    def record(message: str) -> None:
        if log is not None:
            log.write(" ".join(message.split())[:500] + "\n")

    apply_limits(int(settings.get("memory_mb", 4096)))
    install_guard(settings.get("deny", ()), allow_sockets=True, log=record)
    app.start()


if __name__ == "__main__":
    main()

"""The course's grader (instructors only; never part of the students' `gpt_lab`).

- `submission`: read a notebook, extract its graded definitions (no code runs).
- `confine`: the sandbox base (bubblewrap, process limits, audit hook), shared by the kernel and the checks.
- `sandbox`: run a notebook's definitions in a confined child process; call them over a pipe.
- `kernel`: the confined Jupyter kernel `nbgrader autograde` runs a notebook in.
- `labs`: one package per lab (spec, scenarios, hidden checks) and the registry `LABS`.
- `checks`: `run_checks(lab, notebook)` -> list of `Result`.
- `grade`, `cli`: `gpt-lab-grade LAB SUBMISSIONS`, the grade table and the feedback pages.
"""
import os
import sys

# nbgrader creates its gradebook by running the `alembic` executable, which lives beside this
# interpreter: make it findable when the venv is used without being activated (.venv/bin/gpt-lab-grade).
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

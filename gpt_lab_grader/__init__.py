"""Grading the labs: read a submitted notebook, run its graded code in a limited child process,
and check it against gpt_lab's references.

- `submission`: read a notebook, extract its graded definitions (no code runs).
- `sandbox`: run those definitions in a separate, limited process; call them over a pipe.
- `scenarios`: seeded programs that use the graded functions inside gpt_lab (the GPT, training).
- `checks`: the lab registry (`LABS`) and `run_checks(lab, notebook)` -> list of `CheckResult`.
"""
import importlib
import os
import sys

# nbgrader creates its gradebook by running the `alembic` executable, which lives beside this
# interpreter: make it findable when the venv is used without being activated (.venv/bin/gpt-lab).
_BIN = os.path.dirname(sys.executable)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")

_EXPORTS = {"LABS": "checks", "CheckResult": "checks", "LabSpec": "checks", "resolve_lab": "checks",
            "run_checks": "checks", "collect_checks": "checks", "SubmissionError": "submission",
            "extract_definitions": "submission", "read_notebook": "submission"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    """Import lazily, so `python -m gpt_lab.grading.checks` and the sandbox child stay light."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"gpt_lab.grading.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'gpt_lab.grading' has no attribute {name!r}")

"""Hidden lab checks (check_*.py, run by `gpt_lab.grading.checks.run_checks`) and the machinery tests."""
from adapters import student  # noqa: F401  (the fixture every check uses)

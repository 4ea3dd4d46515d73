"""The process pool: results come back, and a hung, crashing or raising job costs only its own result.

The jobs are standard-library callables, so they unpickle in the pool's processes whatever sys.path is.
"""
import operator
import os
import subprocess
import time

from gpt_lab_grader.pool import Failure, Job, run_jobs


def test_results_and_failures_are_isolated(tmp_path):
    orphan = tmp_path / "orphan-was-here"
    # a job that starts a grandchild (which would write `orphan` after 3 s) and then hangs
    leave_child = ["sh", "-c", f"(sleep 3; touch {orphan}) & sleep 100"]
    jobs = [Job(("mul", i), operator.mul, (i, i), limit_s=60) for i in range(4)]
    jobs += [Job("hang", time.sleep, (100,), limit_s=2), Job("die", os._exit, (3,), limit_s=60),
             Job("fail", int, ("not a number",), limit_s=60),
             Job("orphan", subprocess.run, (leave_child,), limit_s=1)]
    seen = []
    start = time.monotonic()
    results = run_jobs(jobs, workers=2, on_result=lambda key, _: seen.append(key))
    assert time.monotonic() - start < 60
    assert [results[("mul", i)] for i in range(4)] == [0, 1, 4, 9]
    assert results["hang"] == Failure("timeout", "stopped after the 2 s time limit")
    assert results["die"].kind == "crashed" and "code 3" in results["die"].message
    assert results["fail"].kind == "error" and "ValueError: invalid literal" in results["fail"].message
    assert results["orphan"].kind == "timeout"
    assert sorted(map(str, seen)) == sorted(map(str, results))
    time.sleep(4)
    assert not orphan.exists(), "a process started by a timed-out job outlived it"

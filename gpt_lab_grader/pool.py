"""Run grading jobs in parallel, each in a fresh process of its own that can be killed.

A job that hangs, crashes, exits or eats its memory costs only its own result: the pool keeps going.
Processes come from a `forkserver` that imported the heavy modules (nbgrader) once, so a fresh process per
job starts in milliseconds. Each job runs in a new session; on timeout the whole session is killed
(the job and anything it started in that session).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any


@dataclass
class Job:
    """`fn(*args)` in its own process, killed after `limit_s` seconds of wall-clock time."""

    key: Any
    fn: Callable[..., Any]
    args: tuple = ()
    limit_s: float = 600.0


@dataclass
class Failure:
    """Why a job gave no result: kind is "timeout", "crashed" (the process died) or "error" (it raised)."""

    kind: str
    message: str


def _child(fn: Callable[..., Any], args: tuple, conn) -> None:
    os.setsid()  # its own session: a timeout kills the job and everything it started
    devnull = os.open(os.devnull, os.O_RDWR)  # jobs report through `conn`, never the terminal
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    try:
        result = ("ok", fn(*args))
    except BaseException as exc:  # noqa: BLE001 - report everything, including SystemExit
        result = ("error", f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-8)}")
    conn.send(result)
    conn.close()


def _kill_session(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _run(ctx, job: Job) -> Any:
    recv, send = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(job.fn, job.args, send), daemon=True)
    start = time.monotonic()
    process.start()
    send.close()
    try:
        if not recv.poll(job.limit_s):
            return Failure("timeout", f"stopped after the {job.limit_s:.0f} s time limit")
        try:
            kind, value = recv.recv()
        except (EOFError, OSError):
            process.join(5)
            code = process.exitcode
            how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
            return Failure("crashed", f"the grading process {how} after {time.monotonic() - start:.0f} s")
        return value if kind == "ok" else Failure("error", value)
    finally:
        recv.close()
        _kill_session(process.pid)  # stray children (a kernel left behind) go too
        process.kill()
        process.join(5)


def forkserver_context(preload: Sequence[str] = ()) -> mp.context.BaseContext:
    """A forkserver context whose server imported `preload` once (shared by every job)."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(list(preload))
    return ctx


def run_jobs(jobs: Iterable[Job], workers: int = 1, on_result: Callable[[Any, Any], None] | None = None,
             ctx: mp.context.BaseContext | None = None) -> dict[Any, Any]:
    """Run `jobs`, at most `workers` at a time: {key: result or Failure}; `on_result(key, result)` as each ends."""
    jobs = list(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    ctx = ctx or forkserver_context()
    results: dict[Any, Any] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(_run, ctx, job): job.key for job in jobs}
        for future in as_completed(futures):
            key = futures[future]
            results[key] = future.result()
            if on_result is not None:
                on_result(key, results[key])
    return results

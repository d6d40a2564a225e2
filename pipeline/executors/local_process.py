"""The body of one local worker process: receive a group, run it, report back, repeat.

The network and the style-target cache live as long as the process, so the VGG is loaded
once per worker, not per group. Everything goes through the worker's own pipe: groups in,
events out (see run/worker.py for the events), and ("group_done", None, job ids) after each
group, so the base can tell a job without a record from a job still running. The worker watches its parent's pid and
exits when the parent is gone, rather than running orphaned.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any


class ParentGone(BaseException):
    """The parent process died; stop working (a BaseException: no job handler may catch it)."""


def worker_main(device: str, cache_dir: str | None, threads: int, conn: Any, parent_pid: int,
                options: dict[str, Any]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from ..run.cache import StyleTargetCache
    from ..run.worker import JobRunner, resolve_device

    if threads:
        torch.set_num_threads(threads)
    runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir), **options)

    def parent_alive() -> bool:
        return os.getppid() == parent_pid

    def emit(event: Any) -> None:
        if not parent_alive():
            raise ParentGone()
        try:
            conn.send(event)
        except OSError:
            raise ParentGone() from None

    emit(("ready", None, None))
    while True:
        try:
            if not conn.poll(1.0):
                if not parent_alive():
                    return
                continue
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        jobs, root = message
        try:
            runner.run_group(jobs, Path(root), emit)
            # The group is over: the base fails (and retries) any job it sent without a record.
            emit(("group_done", None, [job.job_id for job in jobs]))
        except ParentGone:
            return

"""The body of one worker process: receive a job, run it, report back, repeat.

The network and the style-target cache live as long as the process, so the VGG is loaded
once per worker, not per job. Messages to the parent are tuples (kind, worker, job_id, payload).
"""
from __future__ import annotations

import os
import queue
import signal
import time
import traceback
from pathlib import Path
from typing import Any

# Test-only fault hook: when set to a file path that does not exist yet, the worker creates it
# and kills itself with SIGKILL at step 2 of its job, once, to prove recovery from a dead worker.
FAULT_KILL_ONCE = "NST_BATCH_FAULT_KILL_ONCE"
PROGRESS_EVERY = 0.5  # seconds between progress messages


class ParentGone(Exception):
    """The parent process died; stop working instead of running orphaned."""


def worker_main(index: int, device: str, cache_dir: str | None, threads: int,
                tasks: Any, results: Any, parent_pid: int) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from .cache import StyleTargetCache
    from .errors import NSTError
    from .worker import JobRunner, failure_record, iso_time, resolve_device, safe_join

    if threads:
        torch.set_num_threads(threads)
    runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir))
    results.put(("ready", index, None, None))
    while True:
        try:
            message = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return
            continue
        if message is None:
            return
        job, output_dir, attempt = message
        last = [0.0]
        fault = os.environ.get(FAULT_KILL_ONCE)

        def progress(p, job=job) -> None:
            if fault and p.step == 2 and not os.path.exists(fault):
                Path(fault).touch()
                os.kill(os.getpid(), signal.SIGKILL)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_EVERY or p.step == p.total:
                last[0] = now
                if os.getppid() != parent_pid:
                    raise ParentGone()
                results.put(("progress", index, job.job_id, (p.step, p.total, p.losses["total"])))

        started, t0 = time.time(), time.perf_counter()
        try:
            root = Path(output_dir)
            record = runner.run(job, safe_join(root, job.output), safe_join(root, job.sidecar), progress,
                                extra={"attempts": attempt})
            results.put(("done", index, job.job_id, record))
        except ParentGone:
            return
        except NSTError as err:
            record = failure_record(job, err, str(runner.device), iso_time(started), time.perf_counter() - t0)
            results.put(("failed", index, job.job_id, record))
        except Exception as err:  # a bug or an unexpected library error: record it, keep serving
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            record = failure_record(job, f"{type(err).__name__}: {err}" if str(err) else detail,
                                    str(runner.device), iso_time(started), time.perf_counter() - t0)
            results.put(("failed", index, job.job_id, record))



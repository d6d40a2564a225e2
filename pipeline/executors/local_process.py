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
# and kills itself with SIGKILL at its first progress report from step 2 on, once, to prove
# recovery from a dead worker.
FAULT_KILL_ONCE = "NST_BATCH_FAULT_KILL_ONCE"


class ParentGone(Exception):
    """The parent process died; stop working instead of running orphaned."""


def worker_main(index: int, device: str, cache_dir: str | None, threads: int,
                tasks: Any, results: Any, parent_pid: int, options: dict[str, Any] | None = None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import torch

    from ..run.cache import StyleTargetCache
    from ..errors import NSTError
    from ..run.jobs import safe_join
    from ..run.worker import JobRunner, Task, failure_record, now_iso, resolve_device

    if threads:
        torch.set_num_threads(threads)
    runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir), **(options or {}))
    results.put(("ready", index, None, None))
    fault = os.environ.get(FAULT_KILL_ONCE)
    while True:
        try:
            message = tasks.get(timeout=1.0)
        except queue.Empty:
            if os.getppid() != parent_pid:
                return
            continue
        if message is None:
            return
        group, output_dir, attempts = message
        root = Path(output_dir)
        reported: set[str] = set()
        began: dict[str, tuple[str, float]] = {}

        def progress_for(job):
            def progress(p) -> None:
                if fault and p.step >= 2 and not os.path.exists(fault):
                    Path(fault).touch()
                    os.kill(os.getpid(), signal.SIGKILL)
                if os.getppid() != parent_pid:
                    raise ParentGone()
                results.put(("progress", index, job.job_id, (p.step, p.total, p.losses["total"])))
            return progress

        def started(task) -> None:
            began[task.job.job_id] = (now_iso(), time.perf_counter())
            results.put(("started", index, task.job.job_id, None))

        def report(task, outcome) -> None:
            job = task.job
            reported.add(job.job_id)
            if isinstance(outcome, NSTError):
                when, t0 = began.get(job.job_id, (now_iso(), time.perf_counter()))
                outcome = failure_record(job, outcome, str(runner.device), when, time.perf_counter() - t0)
                outcome["attempts"] = attempts[job.job_id]
                results.put(("failed", index, job.job_id, outcome))
            else:
                results.put(("done", index, job.job_id, outcome))

        try:
            tasks_ = []
            for job in group:
                task = Task(job, root / job.output, None, progress_for(job),
                            {"attempts": attempts[job.job_id], "worker": index})
                try:   # a bad output path fails its own job, not its batch-mates
                    task.image_path, task.sidecar_path = safe_join(root, job.output), safe_join(root, job.sidecar)
                except NSTError as err:
                    report(task, err)
                    continue
                tasks_.append(task)
            runner.run_batch(tasks_, report, started)
        except ParentGone:
            return
        except Exception as err:  # a bug or an unexpected library error: record it, keep serving
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            # An NSTError (say, an output path that escapes the folder) is already one line for users.
            message_text = str(err) if isinstance(err, NSTError) else (
                f"{type(err).__name__}: {err}" if str(err) else detail)
            for job in group:
                if job.job_id not in reported:
                    when, t0 = began.get(job.job_id, (now_iso(), time.perf_counter()))
                    record = failure_record(job, message_text, str(runner.device), when, time.perf_counter() - t0)
                    record["attempts"] = attempts[job.job_id]
                    results.put(("failed", index, job.job_id, record))

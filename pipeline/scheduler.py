"""Local multi-process executor: one worker process per device slot, the parent owns all state.

Workers are started with the `spawn` context, each pinned to its GPU through
CUDA_VISIBLE_DEVICES before CUDA can start in it. The parent hands each idle worker one job
through that worker's own queue, so it always knows which job a worker holds: a worker that
dies (segfault, kill -9, OOM killer) is detected, replaced, and its job retried up to
`retries` times. A job past its timeout has its worker killed and is recorded as timed out.
"""
from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import signal
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from .errors import DeviceError
from .jobs import Job

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2


@dataclass(frozen=True)
class Slot:
    """One worker: its device as the user named it and its index among workers."""
    index: int
    device: str          # cpu | cuda:N (physical index)
    threads: int = 0     # torch CPU threads (0: leave torch's default)


@dataclass
class WorkerState:
    slot: Slot
    process: Any = None
    tasks: Any = None
    job: Job | None = None
    job_started: float = 0.0
    ready: bool = False
    step: int = 0
    total: int = 0
    loss: float | None = None
    startup_failures: int = 0
    dead: bool = False


class Listener(Protocol):
    def job_started(self, slot: Slot, job: Job) -> None: ...
    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None: ...
    def job_finished(self, job: Job, record: dict[str, Any], attempts: int) -> None: ...
    def job_failed(self, job: Job, error: str, status: str, attempts: int, device: str,
                   started: float, record: dict[str, Any] | None) -> None: ...
    def job_retry(self, job: Job, error: str, attempt: int) -> None: ...


@dataclass
class StopFlags:
    """Set from signal handlers: `stop` ends dispatching, `abort` also kills running jobs."""
    stop: bool = False
    abort: bool = False


@dataclass
class Scheduler:
    slots: list[Slot]
    output_dir: Path
    cache_dir: Path | None
    retries: int = 2
    timeout: float | None = None
    flags: StopFlags = field(default_factory=StopFlags)

    def run(self, jobs: list[Job], listener: Listener) -> dict[str, int]:
        """Run `jobs` to completion (or until stopped); returns counts of what happened."""
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        pending: deque[Job] = deque(jobs)
        attempts: dict[str, int] = {}
        workers = [WorkerState(slot) for slot in self.slots]
        counts = {"done": 0, "failed": 0, "retried": 0, "respawned": 0}
        for w in workers:
            self._start(ctx, w, results)
        try:
            while pending or any(w.job for w in workers):
                if self.flags.abort:
                    for w in workers:
                        if w.job is not None:
                            # The job goes back to pending: atomic writes mean nothing partial remains.
                            self._kill(w)
                            w.job = None
                    break
                if not self.flags.stop:
                    for w in workers:
                        if w.ready and w.job is None and pending:
                            job = pending.popleft()
                            attempts[job.job_id] = attempts.get(job.job_id, 0) + 1
                            w.job, w.job_started, w.step, w.total, w.loss = job, time.time(), 0, job.params.steps, None
                            w.tasks.put((job, str(self.output_dir), attempts[job.job_id]))
                            listener.job_started(w.slot, job)
                elif not any(w.job for w in workers):
                    break
                self._drain(results, workers, listener, attempts, counts)
                self._check_health(ctx, results, workers, pending, listener, attempts, counts)
        finally:
            self._shutdown(workers)
        return counts

    def _start(self, ctx, w: WorkerState, results) -> None:
        from .worker_process import worker_main

        w.tasks = ctx.Queue()
        w.ready, w.job = False, None
        env_backup = os.environ.get("CUDA_VISIBLE_DEVICES")
        device = w.slot.device
        if device.startswith("cuda"):
            # Pin before the child imports torch: it sees exactly one GPU, as cuda:0.
            os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":")[1] if ":" in device else "0"
            device = "cuda:0"
        # Children inherit an ignored SIGINT (Python then installs no KeyboardInterrupt handler),
        # so Ctrl-C reaches only the parent, which decides what happens to running jobs.
        old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            w.process = ctx.Process(
                target=worker_main, name=f"nst-worker-{w.slot.index}", daemon=True,
                args=(w.slot.index, device, str(self.cache_dir) if self.cache_dir else None,
                      w.slot.threads, w.tasks, results, os.getpid()))
            w.process.start()
        finally:
            signal.signal(signal.SIGINT, old_handler)
            if w.slot.device.startswith("cuda"):
                if env_backup is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = env_backup

    def _drain(self, results, workers, listener, attempts, counts) -> None:
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            try:
                kind, index, job_id, payload = results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            w = workers[index]
            if kind == "ready":
                w.ready = True
                continue
            if w.job is None or w.job.job_id != job_id:
                continue  # a late message from a job we already gave up on
            if kind == "progress":
                w.step, w.total, w.loss = payload
                listener.job_progress(w.slot, w.job, *payload)
            elif kind == "done":
                job, w.job = w.job, None
                counts["done"] += 1
                listener.job_finished(job, payload, attempts[job.job_id])
            elif kind == "failed":
                job, w.job = w.job, None
                counts["failed"] += 1
                listener.job_failed(job, payload["error"], "failed", attempts[job.job_id],
                                    w.slot.device, w.job_started, payload)

    def _check_health(self, ctx, results, workers, pending, listener, attempts, counts) -> None:
        for w in workers:
            if w.job is not None and self.timeout and time.time() - w.job_started > self.timeout:
                job, w.job = w.job, None
                self._kill(w)
                counts["failed"] += 1
                listener.job_failed(job, f"timed out after {self.timeout:g}s (killed)", "timeout",
                                    attempts[job.job_id], w.slot.device, w.job_started, None)
            if w.process is not None and not w.process.is_alive():
                code = w.process.exitcode
                job, w.job = w.job, None
                counts["respawned"] += 1
                if job is not None:
                    reason = _death_reason(code)
                    if attempts[job.job_id] <= self.retries:
                        counts["retried"] += 1
                        listener.job_retry(job, reason, attempts[job.job_id])
                        pending.appendleft(job)
                    else:
                        counts["failed"] += 1
                        listener.job_failed(job, f"{reason}, {attempts[job.job_id]} attempts",
                                            "failed", attempts[job.job_id], w.slot.device,
                                            w.job_started, None)
                elif not w.ready:
                    w.startup_failures += 1
                    log.warning("worker %d (%s) exited during start-up (%s)", w.slot.index,
                                w.slot.device, _death_reason(code))
                    if w.startup_failures >= 3:
                        w.dead, w.process = True, None
                        if all(x.dead for x in workers):
                            raise DeviceError("every worker failed to start (see the warnings above); "
                                              "check --device, or run with --device cpu")
                        continue
                if w.ready:
                    w.startup_failures = 0
                self._start(ctx, w, results)

    def _kill(self, w: WorkerState) -> None:
        if w.process is not None and w.process.is_alive():
            w.process.kill()
            w.process.join(timeout=10)

    def _shutdown(self, workers) -> None:
        for w in workers:
            if w.process is not None and w.process.is_alive():
                try:
                    w.tasks.put(None)
                except (OSError, ValueError):
                    pass
        deadline = time.time() + 10
        for w in workers:
            if w.process is not None:
                w.process.join(timeout=max(0.1, deadline - time.time()))
                if w.process.is_alive():
                    w.process.kill()
                    w.process.join(timeout=5)


def _death_reason(code: int | None) -> str:
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the OOM killer, or kill -9)" if name == "SIGKILL" else ""
        return f"worker died from {name}{hint}"
    return f"worker exited with code {code}"


def plan_slots(devices: str | list[str], workers_per_device: int, workers: int | None,
               cuda_count: Callable[[], int]) -> list[Slot]:
    """Expand `devices` (auto | cpu | [cuda:0, ...]) into worker slots."""
    if devices == "auto":
        n = cuda_count()
        names = [f"cuda:{i}" for i in range(n)] or ["cpu"]
    elif devices == "cpu":
        names = ["cpu"]
    else:
        names = list(devices)
    slots = [name for name in names for _ in range(workers_per_device)]
    if workers is not None:
        # --workers N: N slots spread round-robin over the devices.
        slots = [names[i % len(names)] for i in range(workers)]
    cpu_slots = sum(1 for s in slots if s == "cpu")
    threads = max(1, (os.cpu_count() or 1) // cpu_slots) if cpu_slots else 0
    return [Slot(i, name, threads if name == "cpu" else 0) for i, name in enumerate(slots)]

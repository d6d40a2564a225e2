"""Local multi-process executor: one worker process per device slot, the parent owns all state.

Workers are started with the `spawn` context, each pinned to its GPU through
CUDA_VISIBLE_DEVICES before CUDA can start in it. The parent hands each idle worker one job
through that worker's own queue, so it always knows which job a worker holds: a worker that
dies (segfault, kill -9, OOM killer) is detected, replaced, and its job retried up to
`retries` times. A job past its timeout has its worker killed and is recorded as timed out.
"""
from __future__ import annotations

import itertools
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

from ..errors import DeviceError
from ..run.grouping import batch_key
from ..imaging import image_shape
from ..run.jobs import Job

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
    jobs: dict[str, Job] = field(default_factory=dict)       # what the worker holds now
    started: dict[str, float] = field(default_factory=dict)  # when each of them began
    ready: bool = False
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
    batch_size: int | None = None      # jobs per batch; None: 1 on CPU, up to 8 per GPU (the worker fits them)
    precision: str = "auto"
    compile: bool = False

    def run(self, jobs: list[Job], listener: Listener) -> dict[str, int]:
        """Run `jobs` to completion (or until stopped); returns counts of what happened."""
        ctx = mp.get_context("spawn")
        results = ctx.Queue()
        pending: deque[Job] = deque(jobs)
        attempts: dict[str, int] = {}
        workers = [WorkerState(slot) for slot in self.slots]
        counts = {"done": 0, "failed": 0, "retried": 0, "respawned": 0}
        keys: dict[str, Any] = {}
        for w in workers:
            self._start(ctx, w, results)
        try:
            while pending or any(w.jobs for w in workers):
                if self.flags.abort:
                    for w in workers:
                        if w.jobs:
                            # Its jobs stay pending: atomic writes mean nothing partial remains.
                            self._kill(w)
                            w.jobs.clear()
                    break
                if not self.flags.stop:
                    for w in workers:
                        if w.process is None and not w.dead and pending:
                            self._start(ctx, w, results)      # parked after a kill with nothing to do
                        if w.ready and not w.jobs and pending:
                            self._dispatch(w, self._take_group(pending, w.slot, keys), attempts, listener)
                elif not any(w.jobs for w in workers):
                    break
                self._drain(results, workers, listener, attempts, counts)
                self._check_health(ctx, results, workers, pending, listener, attempts, counts)
        finally:
            self._shutdown(workers)
        return counts

    def _take_group(self, pending: deque[Job], slot: Slot, keys: dict[str, Any]) -> list[Job]:
        """The oldest pending job and up to batch-size − 1 later ones that can share its batch."""
        limit = self.batch_size or (1 if slot.device == "cpu" else 8)
        first = pending.popleft()
        group = [first]
        if limit > 1:
            key = self._key(first, keys)
            for job in list(itertools.islice(pending, 4096)):
                if len(group) >= limit:
                    break
                if self._key(job, keys) == key:
                    pending.remove(job)
                    group.append(job)
        return group

    @staticmethod
    def _key(job: Job, keys: dict[str, Any]) -> Any:
        if job.job_id not in keys:
            keys[job.job_id] = batch_key(job, image_shape(job.content))
        return keys[job.job_id]

    def _dispatch(self, w: WorkerState, group: list[Job], attempts, listener) -> None:
        for job in group:
            attempts[job.job_id] = attempts.get(job.job_id, 0) + 1
            w.jobs[job.job_id] = job
            listener.job_started(w.slot, job)
        w.tasks.put((group, str(self.output_dir), {j.job_id: attempts[j.job_id] for j in group}))

    def _start(self, ctx, w: WorkerState, results) -> None:
        from .local_process import worker_main

        w.tasks = ctx.Queue()
        w.ready = False
        w.jobs, w.started = {}, {}
        env_backup = os.environ.get("CUDA_VISIBLE_DEVICES")
        device = w.slot.device
        if device.startswith("cuda"):
            # Pin before the child imports torch: it sees exactly one GPU, as cuda:0. cuda:N is
            # the N-th GPU this process sees, so map it through our own CUDA_VISIBLE_DEVICES
            # (under Slurm that list names the GPUs the job was given).
            index = int(device.split(":")[1]) if ":" in device else 0
            visible = [v for v in (env_backup or "").split(",") if v.strip()]
            os.environ["CUDA_VISIBLE_DEVICES"] = visible[index] if index < len(visible) else str(index)
            device = "cuda:0"
        # Children inherit an ignored SIGINT (Python then installs no KeyboardInterrupt handler),
        # so Ctrl-C reaches only the parent, which decides what happens to running jobs.
        old_handler = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            options = {"batch_size": self.batch_size, "precision": self.precision, "compile": self.compile}
            w.process = ctx.Process(
                target=worker_main, name=f"nst-worker-{w.slot.index}", daemon=True,
                args=(w.slot.index, device, str(self.cache_dir) if self.cache_dir else None,
                      w.slot.threads, w.tasks, results, os.getpid(), options))
            w.process.start()
        finally:
            signal.signal(signal.SIGINT, old_handler)
            if w.slot.device.startswith("cuda"):
                if env_backup is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = env_backup

    def _drain(self, results, workers, listener, attempts, counts) -> None:
        """Handle worker messages for up to POLL_SECONDS; return at once when a worker frees up."""
        deadline = time.monotonic() + POLL_SECONDS
        while True:
            try:
                kind, index, job_id, payload = results.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return
            w = workers[index]
            if kind == "ready":
                w.ready = True
                return
            job = w.jobs.get(job_id)
            if job is None:
                continue  # a late message from a job we already gave up on
            if kind == "started":
                w.started[job_id] = time.time()
            elif kind == "progress":
                listener.job_progress(w.slot, job, *payload)
            elif kind in ("done", "failed"):
                del w.jobs[job_id]
                started = w.started.pop(job_id, time.time())
                counts[kind] += 1
                if kind == "done":
                    listener.job_finished(job, payload, attempts[job_id])
                else:
                    listener.job_failed(job, payload["error"], "failed", attempts[job_id],
                                        w.slot.device, started, payload)
                if not w.jobs:
                    return

    def _check_health(self, ctx, results, workers, pending, listener, attempts, counts) -> None:
        for w in workers:
            if w.dead:
                continue
            late = [j for j, t in w.started.items() if self.timeout and time.time() - t > self.timeout]
            if late:
                self._kill(w)
                for job_id in late:
                    job = w.jobs.pop(job_id)
                    counts["failed"] += 1
                    listener.job_failed(job, f"timed out after {self.timeout:g}s (killed)", "timeout",
                                        attempts[job_id], w.slot.device, w.started.pop(job_id), None)
                for job in w.jobs.values():
                    # Batch-mates of a timed-out job did nothing wrong: back to pending, attempt not counted.
                    attempts[job.job_id] -= 1
                    pending.appendleft(job)
                w.jobs.clear()
            if w.process is not None and not w.process.is_alive():
                code = w.process.exitcode
                held = list(w.jobs.values())
                w.jobs.clear()
                counts["respawned"] += 1
                for job in held:
                    reason = _death_reason(code)
                    if attempts[job.job_id] <= self.retries:
                        counts["retried"] += 1
                        listener.job_retry(job, reason, attempts[job.job_id])
                        pending.appendleft(job)
                    else:
                        counts["failed"] += 1
                        listener.job_failed(job, f"{reason}, {attempts[job.job_id]} attempts",
                                            "failed", attempts[job.job_id], w.slot.device,
                                            w.started.get(job.job_id, time.time()), None)
                if not held and not w.ready:
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
                if not pending:
                    w.process, w.ready = None, False   # nothing to do: start it again only if needed
                    continue
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
    threads = max(1, usable_cpus() // cpu_slots) if cpu_slots else 0
    return [Slot(i, name, threads if name == "cpu" else 0) for i, name in enumerate(slots)]


def usable_cpus() -> int:
    """CPUs this process may run on: a Slurm or container cpuset (or taskset) is often far
    fewer than the machine's cores, and more torch threads than CPUs crawl."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):   # not Linux
        return os.cpu_count() or 1

"""Local executor: one worker process per slot, on this machine's CPUs and GPUs.

Workers are started with the `spawn` context, each pinned to its GPU through
CUDA_VISIBLE_DEVICES before CUDA can start in it. Each worker has its own pipe to the parent,
for its groups one way and its events the other: a worker killed mid-message (timeout, OOM
killer) can only break its own pipe, never hold a lock that other workers' reports need (a
shared multiprocessing.Queue would: its feeder thread holds the queue's lock while writing).
The parent waits on every pipe and every process sentinel at once, so a death is noticed at
once. Everything else (groups, attempts, retries, timeouts, Ctrl-C) is the base's.
"""
from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, Callable

from ..run.jobs import Job
from .base import Event, Executor, ExecutorOptions, Listener, Slot, StopFlags, death_reason, device_sharing

__all__ = ["LocalExecutor", "Slot", "StopFlags", "ExecutorOptions", "Listener", "plan_slots", "usable_cpus"]
STOP_GRACE = 10.0      # seconds a worker has to finish its group and exit at the end of a run


@dataclass
class _Process:
    process: Any
    conn: Connection
    broken: bool = False         # the pipe reached EOF: wait for the sentinel


class LocalExecutor(Executor):
    def open(self, jobs: list[Job]) -> None:
        self.ctx = mp.get_context("spawn")
        self.procs: dict[int, _Process] = {}
        self.stopping: list[_Process] = []

    def start_slot(self, slot: Slot) -> None:
        from .local_process import worker_main

        parent_conn, child_conn = self.ctx.Pipe()
        env_backup = os.environ.get("CUDA_VISIBLE_DEVICES")
        device = slot.device
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
            cache = str(self.options.cache_dir) if self.options.cache_dir else None
            process = self.ctx.Process(
                target=worker_main, name=f"nst-worker-{slot.index}", daemon=True,
                args=(device, cache, slot.threads, child_conn, os.getpid(),
                      self.options.worker_options(device_sharing(self.slots, slot))))
            process.start()
        finally:
            signal.signal(signal.SIGINT, old_handler)
            if slot.device.startswith("cuda"):
                if env_backup is None:
                    os.environ.pop("CUDA_VISIBLE_DEVICES", None)
                else:
                    os.environ["CUDA_VISIBLE_DEVICES"] = env_backup
        child_conn.close()     # ours closed: the child's death is then EOF on our end
        self.procs[slot.index] = _Process(process, parent_conn)

    def send(self, slot: Slot, jobs: list[Job]) -> None:
        try:
            self.procs[slot.index].conn.send((jobs, str(self.output_dir)))
        except OSError:
            pass   # the worker just died: its sentinel says so at the next poll

    def poll(self, timeout: float) -> list[Event]:
        by_handle: dict[Any, tuple[int, _Process]] = {}
        for index, p in self.procs.items():
            if not p.broken:
                by_handle[p.conn] = (index, p)
            by_handle[p.process.sentinel] = (index, p)
        events: list[Event] = []
        if not by_handle:
            time.sleep(timeout)
            return events
        for handle in wait(list(by_handle), timeout):
            index, p = by_handle[handle]
            if handle is p.conn:
                events += self._drain(index, p)
        for handle in wait([p.process.sentinel for p in self.procs.values()], 0):
            index, p = by_handle[handle]
            events += self._drain(index, p)      # what it said before it died comes first
            p.process.join(timeout=10)
            p.conn.close()
            del self.procs[index]
            events.append(("exited", index, None, death_reason(p.process.exitcode)))
        return events

    def _drain(self, index: int, p: _Process) -> list[Event]:
        events: list[Event] = []
        try:
            while not p.broken and p.conn.poll(0):
                kind, job_id, payload = p.conn.recv()
                events.append((kind, index, job_id, payload))
        except (EOFError, OSError):
            p.broken = True     # died, perhaps mid-message: the sentinel reports the death
        return events

    def stop_slot(self, slot: Slot, kill: bool) -> None:
        p = self.procs.pop(slot.index, None)
        if p is None:
            return
        if kill:
            _kill(p.process)
            p.conn.close()
            return
        try:
            p.conn.send(None)
        except OSError:
            pass
        self.stopping.append(p)

    def close(self) -> None:
        deadline = time.monotonic() + STOP_GRACE
        for p in [*self.stopping, *self.procs.values()]:
            if p in self.stopping:
                p.process.join(timeout=max(0.1, deadline - time.monotonic()))
            _kill(p.process)
            p.conn.close()
        self.stopping, self.procs = [], {}


def _kill(process: Any) -> None:
    if process.is_alive():
        process.kill()
    process.join(timeout=10)


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


"""The executor contract: the loop every executor shares, written once.

`Executor.run(jobs, listener)` owns all the state: the queue of jobs, the groups handed to
workers, attempts, retry-or-fail, timeouts, start-up failures, Ctrl-C and the counts. A
concrete executor (local.py: processes; ray.py: Ray actors) only says how to reach a worker:

    start_slot(slot)        start a worker for a slot; it announces itself with a "ready" event
    send(slot, jobs)        hand a ready, idle worker one group of jobs
    poll(timeout)           the events that arrived within `timeout` seconds, as
                            (kind, slot index, job_id, payload) tuples with kind one of
                            ready | started | progress | record | group_done | exited
                            (group_done: the worker is through with a group; its payload
                            is the job ids of that group)
    stop_slot(slot, kill)   end a worker: at once (kill) or after its current group
    open(jobs) / close()    set up and tear down what the workers share (optional)

The rules the base applies (docs/reliability.md):
- Groups: the oldest pending job and up to batch size − 1 later jobs that can share its batch
  (run/grouping.py); at most 1 per CPU worker and 8 per GPU worker unless --batch-size.
- One record per job sent: when a worker says `group_done`, each job of the group it gave no
  record is failed with "worker returned no result for this job" under the rules for a lost
  worker below (back alone; charged when it was alone). A second record of a job is ignored.
- Failures that are the device's, not the job's (a CUDA error other than out of memory; a
  worker whose consecutive jobs all fail while another succeeds) restart its worker once,
  then retire it; its jobs go back uncharged (executors/health.py).
- A job is tried (its attempt counted) when its worker says it started; its timeout also
  counts from then, not from dispatch (transfers and network loading are not the job's).
- A worker that dies or is killed for a timeout while holding jobs: jobs that had not started
  go back as they were, without an attempt. Started ones go back one at a time, never
  regrouped; the death counts against a job's `retries` only when that job was the only
  unfinished one on the worker, so a poison job cannot use up its batch-mates' retries. A
  timeout of a lone job is recorded as `timeout` and not retried.
- Where a dead worker's last events can be lost (`events_lost_on_death`: Ray), a group it
  was given counts as started when it dies, so the rules above still find a poison job.
- A worker that exits before it starts any job (before it is ready, or while loading the
  network) is a start-up failure; three in a row retire its slot, and a run whose every slot
  is retired stops with a DeviceError.
- StopFlags: `stop` (Ctrl-C once) dispatches nothing more and lets running groups finish;
  `abort` (twice) stops running workers at once, leaving their jobs pending.
"""
from __future__ import annotations

import itertools
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Iterable, Protocol

from ..errors import DeviceError
from ..run.grouping import batch_key, content_shape
from ..run.jobs import Job
from ..run.records import JobRecord, failed_record, iso_time
from .health import DeviceHealth

log = logging.getLogger(__name__)
POLL_SECONDS = 0.2
MISSING_RECORD = "worker returned no result for this job"
Event = tuple[str, int, "str | None", Any]      # (kind, slot index, job_id, payload)


@dataclass(frozen=True)
class Slot:
    """One worker: its device as the user named it and its index among workers."""
    index: int
    device: str          # cpu | cuda:N (physical index)
    threads: int = 0     # torch CPU threads (0: leave torch's default)


@dataclass(frozen=True)
class ExecutorOptions:
    """What every executor accepts; the worker-side ones travel to each worker unchanged."""
    retries: int = 2
    timeout: float | None = None
    cache_dir: Path | None = None
    batch_size: int | None = None      # jobs per batch; None: 1 on CPU, up to 8 per GPU (the worker fits them)
    precision: str = "auto"
    compile: bool = False
    memory_limit: int | None = None    # bytes per worker; None: the device's free memory shared by its workers
    save_every: int = 0                # intermediate images every N evaluations (0: none; run/snapshots.py)

    def worker_options(self, sharing: int = 1) -> dict[str, Any]:
        """JobRunner options; `sharing`: how many workers share this worker's device's memory."""
        return {"batch_size": self.batch_size, "precision": self.precision, "compile": self.compile,
                "memory_limit": self.memory_limit, "sharing": sharing, "save_every": self.save_every}


def device_sharing(slots: list[Slot], slot: Slot) -> int:
    """Workers on `slot`'s device (on CPU: the machine's CPU workers). They share its free memory:
    each plans with its part, not all of it, or N workers would over-commit together."""
    return sum(1 for s in slots if s.device == slot.device)


@dataclass
class StopFlags:
    """Set from signal handlers: `stop` ends dispatching, `abort` also stops running jobs."""
    stop: bool = False
    abort: bool = False


class Listener(Protocol):
    def job_started(self, slot: Slot, job: Job) -> None: ...
    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None: ...
    def job_recorded(self, job: Job, record: JobRecord) -> None: ...   # done, failed or timeout
    def job_retry(self, job: Job, error: str, attempt: int) -> None: ...
    def message(self, text: str) -> None: ...
    def tick(self) -> None: ...          # once per poll, events or not (the live gallery's clock)


@dataclass
class _Worker:
    slot: Slot
    running: bool = False            # started (maybe not ready yet)
    ready: bool = False
    held: dict[str, Job] = field(default_factory=dict)        # sent, no record yet
    started: dict[str, float] = field(default_factory=dict)   # job_id -> clock() at its start
    startup_failures: int = 0
    retired: bool = False
    streak: list[tuple[Job, JobRecord]] = field(default_factory=list)   # failed, held back (health.py)
    last_done: bool = False          # its latest record was a success
    sick_restarts: int = 0           # restarts for a sick device (health.py)


@dataclass
class _Pending:
    job: Job
    alone: bool = False              # back after a worker was lost: runs in a group of one


class Executor(DeviceHealth, ABC):
    # True where a dead worker's last events can be lost (Ray fetches an actor's events in
    # batches): a worker that was given a group and died may have started it unheard.
    events_lost_on_death = False
    # True where a slot's device is the physical one (local workers see theirs as cuda:0): records say it.
    slot_device_is_physical = True

    def __init__(self, slots: list[Slot], output_dir: Path, options: ExecutorOptions = ExecutorOptions(),
                 flags: StopFlags | None = None, clock: Callable[[], float] = time.monotonic):
        self.slots, self.output_dir, self.options = slots, Path(output_dir), options
        self.flags = flags or StopFlags()
        self.clock = clock

    # --- what an executor implements ---------------------------------------------------------

    def open(self, jobs: list[Job]) -> None:
        """Before any worker starts."""

    def close(self) -> None:
        """After the run, whatever happened: wait for stopping workers, release resources."""

    @abstractmethod
    def start_slot(self, slot: Slot) -> None: ...

    @abstractmethod
    def send(self, slot: Slot, jobs: list[Job]) -> None: ...

    @abstractmethod
    def poll(self, timeout: float) -> Iterable[Event]: ...

    @abstractmethod
    def stop_slot(self, slot: Slot, kill: bool) -> None:
        """After this, no event of that worker arrives (a later start_slot starts a new one)."""

    # --- the loop ----------------------------------------------------------------------------

    def run(self, jobs: list[Job], listener: Listener) -> dict[str, int]:
        """Run `jobs` to completion (or until stopped); returns counts of what happened."""
        self.listener = listener
        self.pending: deque[_Pending] = deque(_Pending(j) for j in jobs)
        self.attempts: dict[str, int] = {}
        self.blamed: dict[str, int] = {}
        self.counts = {"done": 0, "failed": 0, "retried": 0, "respawned": 0}
        self.workers = [_Worker(slot) for slot in self.slots]
        self._keys: dict[str, Hashable] = {}
        self.reset_health()
        self.open(jobs)
        try:
            while self.pending or self._busy():
                if self.flags.abort:
                    for w in self.workers:
                        if w.held:   # their jobs stay pending: atomic writes leave nothing partial
                            self._stop(w, kill=True)
                    break
                if not self.flags.stop:
                    self._dispatch()
                elif not self._busy():
                    break
                self.silenced.clear()
                for event in self.poll(POLL_SECONDS):
                    if event[1] not in self.silenced:   # a worker stopped for its device, this round
                        self._handle(event)
                self._check_timeouts()
                self.settle_suspects()
                getattr(self.listener, "tick", lambda: None)()
            self.release_streaks()
        finally:
            try:
                for w in self.workers:
                    if w.running:
                        self._stop(w, kill=bool(w.held))
            finally:
                self.close()
        return self.counts

    def _busy(self) -> bool:
        return any(w.held for w in self.workers)

    def _dispatch(self) -> None:
        for w in self.workers:
            if not self.pending:
                return
            if not w.running and not w.retired:
                self._start(w)
            if w.ready and not w.held and not self.suspect(w):
                group = self._take_group(w.slot)
                w.held = {j.job_id: j for j in group}
                self.send(w.slot, group)

    def _start(self, w: _Worker) -> None:
        w.running, w.ready, w.held, w.started = True, False, {}, {}
        self.start_slot(w.slot)

    def _stop(self, w: _Worker, kill: bool) -> None:
        self.stop_slot(w.slot, kill)
        w.running = w.ready = False

    def _take_group(self, slot: Slot) -> list[Job]:
        """The oldest pending job and up to batch-size − 1 later ones that can share its batch."""
        first = self.pending.popleft()
        group = [first.job]
        limit = self.options.batch_size or (1 if slot.device == "cpu" else 8)
        if first.alone or limit == 1:
            return group
        key = self._key(first.job)
        for entry in list(itertools.islice(self.pending, 4096)):
            if len(group) >= limit:
                break
            if not entry.alone and self._key(entry.job) == key:
                self.pending.remove(entry)
                group.append(entry.job)
        return group

    def _key(self, job: Job) -> Hashable:
        if job.job_id not in self._keys:
            self._keys[job.job_id] = batch_key(job, content_shape(job))
        return self._keys[job.job_id]

    # --- events ------------------------------------------------------------------------------

    def _handle(self, event: Event) -> None:
        kind, index, job_id, payload = event
        w = self.workers[index]
        if kind == "ready":
            w.ready = True
        elif kind == "exited":
            self._lost(w, payload)
        elif kind == "group_done":
            self._group_done(w, payload)
        elif job_id not in w.held:
            return      # a late message about a job already given up on
        elif kind == "started":
            self._started(w, job_id)
        elif kind == "progress" and job_id in w.started:
            self.listener.job_progress(w.slot, w.held[job_id], *payload)
        elif kind == "record":
            self._started(w, job_id)      # a job may fail before it says it started
            job = w.held.pop(job_id)
            w.started.pop(job_id)
            if not self.screen(w, job, payload):    # a sick device's failure goes back, uncharged
                self._record(w, job, payload)

    def _group_done(self, w: _Worker, group: list[str]) -> None:
        """The worker is through with `group`: a job of it still held has no record and never will.
        (By the ids: the worker may already hold its next group when this arrives.)"""
        held = {job_id: w.held.pop(job_id) for job_id in group if job_id in w.held}
        started = {job_id: w.started.pop(job_id) for job_id in held if job_id in w.started}
        for job_id in held:
            if job_id not in started:
                started[job_id] = self.clock()
                self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        if held:
            log.warning("worker %d returned no result for %d job(s) of its group", w.slot.index, len(held))
            self._give_back(w, held, started, MISSING_RECORD, timed_out=())

    def _started(self, w: _Worker, job_id: str) -> None:
        if job_id not in w.started:
            w.started[job_id] = self.clock()
            w.startup_failures = 0
            self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
            self.listener.job_started(w.slot, w.held[job_id])

    def _record(self, w: _Worker, job: Job, record: JobRecord) -> None:
        self.counts["done" if record.done else "failed"] += 1
        device = w.slot.device if self.slot_device_is_physical else None
        self.listener.job_recorded(job, record.tried(self.attempts.get(job.job_id, 1), w.slot.index, device))
        if record.done:
            self.succeeded(w)

    def _lost(self, w: _Worker, reason: str) -> None:
        """The worker is gone (it died, or failed to start); it is restarted when needed."""
        was_ready, held, started = w.ready, w.held, w.started
        w.running, w.ready, w.held, w.started = False, False, {}, {}
        if self.events_lost_on_death and was_ready and held and not started:
            # Its "started" events may have died with it: count the group as started, so the
            # death is no start-up failure and the one-at-a-time rule finds a poison job.
            started = {job_id: self.clock() for job_id in held}
            for job_id in held:
                self.attempts[job_id] = self.attempts.get(job_id, 0) + 1
        if was_ready:
            self.counts["respawned"] += 1
        self._give_back(w, held, started, reason, timed_out=())
        if not started:
            # It never got as far as running a job (say, the network does not load): a start-up
            # failure. Its jobs went back untried; three in a row retire the slot.
            w.startup_failures += 1
            self.listener.message(f"worker {w.slot.index} ({w.slot.device}) exited before running a job: {reason}")
            if w.startup_failures >= 3:
                w.retired = True
                if all(x.retired for x in self.workers) and not self.fail_left_for_sick_devices():
                    raise DeviceError("every worker failed to start (see the messages above); check "
                                      "--device, that nst-batch is installed where the workers run, "
                                      "or run with --device cpu")

    def _check_timeouts(self) -> None:
        timeout = self.options.timeout
        if not timeout:
            return
        now = self.clock()
        for w in self.workers:
            late = [j for j, t in w.started.items() if now - t > timeout]
            if not late:
                continue
            held, started = w.held, w.started
            self._stop(w, kill=True)
            w.held, w.started = {}, {}
            self.counts["respawned"] += 1
            self._give_back(w, held, started, f"timed out after {timeout:g}s (killed)", timed_out=late)

    def _give_back(self, w: _Worker, held: dict[str, Job], started: dict[str, float], reason: str,
                   timed_out: Iterable[str]) -> None:
        """A lost worker's jobs: back to pending (alone), or failed when the loss was theirs."""
        alone = len(started) == 1       # only then is the loss this job's doing
        back: list[_Pending] = []
        for job_id, job in held.items():
            if job_id not in started:
                back.append(_Pending(job))          # never started: no attempt, no blame
                continue
            attempt = self.attempts[job_id]
            if alone and job_id in timed_out:
                self._fail(w, job, started[job_id], reason, "timeout")
                continue
            if alone:
                self.blamed[job_id] = self.blamed.get(job_id, 0) + 1
                if self.blamed[job_id] > self.options.retries:
                    self._fail(w, job, started[job_id], f"{reason}, {attempt} attempts", "failed")
                    continue
            self.counts["retried"] += 1
            self.listener.job_retry(job, reason if alone else f"{reason}; running its batch-mates one "
                                    "at a time", attempt)
            back.append(_Pending(job, alone=True))
        self.pending.extendleft(reversed(back))

    def _requeue(self, front: list[Job], back: list[Job]) -> None:
        """Jobs that go back as they were (a sick device's), to the front or the back of the queue."""
        self.pending.extendleft(reversed([_Pending(job) for job in front]))
        self.pending.extend(_Pending(job) for job in back)

    def _fail(self, w: _Worker, job: Job, started: float, error: str, status: str) -> None:
        seconds = max(0.0, self.clock() - started)
        record = failed_record(job, error, w.slot.device, iso_time(time.time() - seconds), seconds, status)
        self._record(w, job, record)


def death_reason(code: int | None) -> str:
    """A dead worker process's exit code in words."""
    import signal

    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = " (the OOM killer, or kill -9)" if name == "SIGKILL" else ""
        return f"worker died from {name}{hint}"
    return f"worker exited with code {code}"

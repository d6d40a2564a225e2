"""An honest ETA for a run, from what the run itself has measured.

The unit of work is one objective evaluation of one pixel ("pixel-evaluation"): a stage of a
job costs `evaluations × H × W` of that stage's image. The cost of an evaluation grows with
the pixel count (VGG is convolutional), so this one unit covers every image size and every
coarse-to-fine stage; it ignores fixed per-evaluation overhead, which makes small images
look a little cheaper than they are.

Each worker's throughput is measured in pixel-evaluations per second, separately for each
batch size it has run at (a batch of 4 does more work per second than 4 jobs alone), from
the progress reports of its running jobs: between two reports, the work done by every job of
the worker over the seconds elapsed. The estimate is

    remaining work (pending jobs: all of it; running ones: what is left of their stages)
    ──────────────────────────────────────────────────────────────────────────────────────
    Σ over workers of their measured throughput (at their current or last batch size;
    a worker not yet measured counts as the mean of those that are)

so it needs no finished job: the first progress reports of the first running jobs give it.
Until then it is unknown (None), never a guess. Jobs that converge early (tol) finish sooner
than estimated; retried jobs go back to pending with all their work. The clock is injected,
so tests drive it without timing anything.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

Stages = Sequence[tuple[int, int]]       # (pixels of the stage's image, evaluations) per stage


def remaining_work(stages: Stages, step: int) -> float:
    """Pixel-evaluations left after `step` evaluations (all stages, in order)."""
    left = 0.0
    for pixels, evals in stages:
        done_here = min(max(step, 0), evals)
        step -= evals
        left += (evals - done_here) * pixels
    return left


@dataclass
class _Running:
    worker: int
    stages: Stages
    step: int = 0


@dataclass
class _Worker:
    rates: dict[int, tuple[float, float]] = field(default_factory=dict)   # batch -> (work, seconds)
    last: float | None = None          # clock of the worker's last report
    batch: int = 1                     # jobs it runs now (or ran last)

    def throughput(self) -> float | None:
        for batch in (self.batch, *sorted(self.rates, reverse=True)):
            work, seconds = self.rates.get(batch, (0.0, 0.0))
            if seconds > 0 and work > 0:
                return work / seconds
        return None


class EtaModel:
    """Feed it the run's events; `seconds_left()` answers from the throughput measured so far."""

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.pending: dict[str, Stages] = {}
        self.running: dict[str, _Running] = {}
        self.workers: dict[int, _Worker] = {}

    # events ------------------------------------------------------------------------------
    def add(self, job_id: str, stages: Stages) -> None:
        """A job that will run (queued, or given back for a retry)."""
        self.running.pop(job_id, None)
        self.pending[job_id] = tuple(stages)

    def started(self, worker: int, job_id: str) -> None:
        stages = self.pending.pop(job_id, None)
        if stages is None:
            return
        w = self.workers.setdefault(worker, _Worker())
        self._account(worker)           # the work before this start ran at the old batch size
        self.running[job_id] = _Running(worker, stages)
        w.batch = self._on(worker)

    def progress(self, job_id: str, step: int, total: int | None = None) -> None:
        """`total`: the job's evaluation budget as the worker counts it. A clip's frames are
        only known to the worker: a larger total stretches the job's stages to match."""
        job = self.running.get(job_id)
        if job is None:
            return
        known = sum(n for _, n in job.stages)
        if total and known and total > known:
            job.stages = tuple((px, n * total / known) for px, n in job.stages)
        self._account(job.worker, job_id, step)

    def finished(self, job_id: str) -> None:
        """Done or failed for good: its remaining work leaves the estimate."""
        self.pending.pop(job_id, None)
        job = self.running.pop(job_id, None)
        if job is not None:
            w = self.workers[job.worker]
            w.batch = max(1, self._on(job.worker))

    def retry(self, job_id: str) -> None:
        job = self.running.pop(job_id, None)
        if job is not None:
            self.pending[job_id] = job.stages

    def worker_gone(self, worker: int) -> None:
        """A retired or stopped worker no longer adds throughput."""
        self.workers.pop(worker, None)

    # the estimate ------------------------------------------------------------------------
    def work_left(self) -> float:
        return (sum(remaining_work(s, 0) for s in self.pending.values())
                + sum(remaining_work(j.stages, j.step) for j in self.running.values()))

    def throughput(self) -> float | None:
        """Pixel-evaluations per second of all workers together; None before any measurement."""
        measured = [r for r in (w.throughput() for w in self.workers.values()) if r is not None]
        if not measured:
            return None
        mean = sum(measured) / len(measured)
        return sum(w.throughput() or mean for w in self.workers.values())

    def seconds_left(self) -> float | None:
        left = self.work_left()
        if left <= 0:
            return 0.0
        speed = self.throughput()
        return None if not speed else left / speed

    # internals ---------------------------------------------------------------------------
    def _on(self, worker: int) -> int:
        return sum(1 for j in self.running.values() if j.worker == worker)

    def _account(self, worker: int, job_id: str | None = None, step: int = 0) -> None:
        """Credit the worker with the work its report shows since the worker's last report."""
        now = self.clock()
        w = self.workers.setdefault(worker, _Worker())
        work = 0.0
        if job_id is not None:
            job = self.running[job_id]
            step = max(step, job.step)
            work = remaining_work(job.stages, job.step) - remaining_work(job.stages, step)
            job.step = step
        if w.last is not None and job_id is not None:
            done, seconds = w.rates.get(w.batch, (0.0, 0.0))
            # Jobs of one batch report one after the other for the same evaluations: the
            # time between reports is shared, so only the batch's first report adds seconds.
            w.rates[w.batch] = (done + work, seconds + max(0.0, now - w.last))
        w.last = now


def format_eta(seconds: float | None, now: float | None = None) -> str:
    """`ETA 1h23m (~07:52)`; `ETA --` while unknown. `now` is a wall-clock time (time.time())."""
    if seconds is None:
        return "ETA --"
    s = int(round(seconds))
    text = f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else (f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s")
    if now is None:
        return f"ETA {text}"
    return f"ETA {text} (~{time.strftime('%H:%M', time.localtime(now + seconds))})"

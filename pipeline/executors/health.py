"""Device health: failures that are the device's, not the job's, retire the device's worker.

A GPU with a sticky CUDA error (an illegal memory access: its context is gone) turns every
job its worker is given into a failed record within milliseconds, so one sick device would
empty the whole queue into failed rows while a healthy worker is still loading its network.
The base (executors/base.py) shows this mixin every record before recording it:

- A failed record whose error is the device's (`device_fault`: a CUDA error other than out
  of memory) is not recorded: the job goes back to the end of the queue as it was, its
  attempt uncounted and its retries uncharged, and the worker is sick. A job that meets a
  device fault a second time, on a worker whose previous job had succeeded, is itself at
  fault (a kernel it alone breaks): then its record stands.
- A worker whose STREAK consecutive jobs failed with an unexplained error (`unexplained`: an
  exception the worker did not diagnose, such as `RuntimeError: …`, not one of our one-line
  reasons like a bad image or a size that does not fit, which are the job's whatever the
  device) is a suspect: its failed records are held
  back and it is sent nothing more until another worker settles the question. A success
  elsewhere makes it sick (its held jobs go back uncharged); when no other worker is left to
  compare with (all suspects, retired, or none), the failures were the jobs': they are
  recorded and the suspects work on. A success of its own records its held failures.
- A sick worker is restarted once (a fresh process, a fresh CUDA context); sick again before
  it has succeeded at anything, it is retired: its device is used no more, and the log and the run summary (`retired`) say so.
  When every worker is retired, each job left is recorded as failed with a reason naming
  the retired devices, so the run still ends with one record per job.
"""
from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

from ..run.records import JobRecord, failed_record, now_iso

if TYPE_CHECKING:
    from ..run.jobs import Job

log = logging.getLogger(__name__)
STREAK = 3      # consecutive failures of one worker, while another succeeds, that make it sick
# What PyTorch says when the device (not the job's size) fails: "CUDA error: an illegal memory
# access was encountered", torch.AcceleratorError, cudaErrorLaunchFailure and the like.
_DEVICE_FAULT = re.compile(r"CUDA error|cudaError|AcceleratorError")
# An exception the worker did not diagnose: records name its type ("RuntimeError: …"), where
# our own errors are a reason in words (records.error_message).
_UNEXPLAINED = re.compile(r"[A-Z]\w*(Error|Exception)\b")


def device_fault(error: str | None) -> bool:
    """True for an error that is the device's: a CUDA error other than running out of memory
    (out of memory is the job's size: the worker halves its batch or fails the job)."""
    return bool(error and _DEVICE_FAULT.search(error) and "out of memory" not in error.lower())


def unexplained(error: str | None) -> bool:
    """True for an error the worker did not diagnose (a library's exception, by its type name)."""
    return bool(error and _UNEXPLAINED.match(error))


class DeviceHealth:
    """The device-health rules of `Executor` (a mixin: it uses the base's state and helpers)."""

    workers: list[Any]
    pending: Any
    attempts: dict[str, int]
    counts: dict[str, int]
    listener: Any

    def reset_health(self) -> None:
        self.retired_workers: list[str] = []     # one sentence each, for the run summary
        self.silenced: set[int] = set()          # workers stopped while handling this poll's events
        self.faulted_on: dict[str, set[int]] = {}   # job_id -> slots where it met a device fault

    def suspect(self, w: Any) -> bool:
        return len(w.streak) >= STREAK

    def screen(self, w: Any, job: Job, record: JobRecord) -> bool:
        """True when the base must not record `record` now (held back, or the job went back)."""
        if record.done or record.status != "failed":
            return False
        if device_fault(record.error):
            slots = self.faulted_on.setdefault(job.job_id, set())
            if not (slots and w.last_done):
                slots.add(w.slot.index)
                self._sick(w, record.error or "a device error", [job])
                return True
        if not unexplained(record.error):
            return False            # the job's own failure (a bad image, a size that does not fit)
        w.last_done = False
        if not any(x is not w and not x.retired for x in self.workers):
            return False            # no other worker to compare with: the failure is the job's
        w.streak.append((job, record))
        if self.suspect(w) and any(x.last_done and not x.retired for x in self.workers if x is not w):
            self._sick(w, f"its last {len(w.streak)} jobs failed while other workers succeeded "
                          f"(the last: {record.error})", [])
        return True

    def succeeded(self, w: Any) -> None:
        """After a done record of `w`: its held failures were its jobs'; suspects elsewhere are sick."""
        w.last_done, w.sick_restarts = True, 0     # it works: a later fault is a new episode
        self._release(w)
        for x in self.workers:
            if x is not w and self.suspect(x):
                self._sick(x, f"its last {len(x.streak)} jobs failed while other workers succeeded "
                              f"(the last: {x.streak[-1][1].error})", [])

    def settle_suspects(self) -> None:
        """Suspects with no other worker left to compare with: their failures were the jobs'."""
        suspects = [w for w in self.workers if self.suspect(w) and not w.retired]
        if suspects and all(self.suspect(x) or x.retired for x in self.workers):
            for w in suspects:
                self._release(w)

    def release_streaks(self) -> None:
        for w in self.workers:
            self._release(w)

    def _release(self, w: Any) -> None:
        held, w.streak = w.streak, []
        for job, record in held:
            self._record(w, job, record)    # type: ignore[attr-defined]

    def _sick(self, w: Any, reason: str, faulted: list[Job]) -> None:
        """Stop `w`; its jobs go back uncharged; it restarts once, then it is retired."""
        front = [*(job for job, _ in w.streak), *w.held.values()]
        back = [*faulted, *front]
        uncount = {job.job_id for job in faulted} | {job.job_id for job, _ in w.streak} | set(w.started)
        for job_id in uncount:
            self.attempts[job_id] = max(0, self.attempts.get(job_id, 1) - 1)
        self._stop(w, kill=True)            # type: ignore[attr-defined]
        w.held, w.started, w.streak, w.last_done = {}, {}, [], False
        self.silenced.add(w.slot.index)
        self._requeue(front, faulted)       # type: ignore[attr-defined]  (a poison job: after the rest)
        where = f"worker {w.slot.index} ({w.slot.device})"
        if w.sick_restarts == 0:
            w.sick_restarts = 1
            self.counts["respawned"] += 1
            text = f"{where} restarted: its device failed ({reason}); {len(back)} job(s) go back uncharged"
        else:
            w.retired = True
            others = any(not x.retired for x in self.workers)
            self.retired_workers.append(f"{where} was retired after a restart: its device kept failing "
                                        f"({reason})" + ("; its jobs went to the other workers" if others else ""))
            text = f"{where} retired: its device kept failing ({reason}); no more jobs go to it"
        log.warning(text)
        self.listener.message(text)
        if all(x.retired for x in self.workers):
            self.fail_left_for_sick_devices()

    def fail_left_for_sick_devices(self) -> bool:
        """Every worker is retired: with a sick device among them, each job left is recorded as
        failed naming them (True); retired at start-up only, the caller raises (False)."""
        self.release_streaks()
        if not self.retired_workers:
            return False
        sick = [w for w in self.workers if w.sick_restarts and w.retired]
        devices = ", ".join(f"worker {w.slot.index} ({w.slot.device})" for w in sick)
        reason = f"no healthy device left: {devices} retired for device errors (see the run's log)"
        while self.pending:
            job = self.pending.popleft().job
            self._record(sick[-1], job, failed_record(job, reason, sick[-1].slot.device, now_iso(), 0.0))  # type: ignore[attr-defined]
        return True

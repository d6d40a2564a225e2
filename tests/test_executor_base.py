"""The executor contract's rules (executors/base.py), driven by a scripted executor and a fake clock.

A third executor in a few lines: workers are scripts that answer each group with events. No
process, no sleep: time moves only when the base polls, so timeouts are exact.
"""
from __future__ import annotations

from collections import deque
from dataclasses import replace
from pathlib import Path

import pytest

from pipeline.errors import DeviceError
from pipeline.executors.base import Executor, ExecutorOptions, Slot, StopFlags
from pipeline.params import Params
from pipeline.run.jobs import Job, StyleRef
from pipeline.run.records import failed_record


def job(name: str) -> Job:
    # Same params and a missing content file: every job has the key of an unreadable content,
    # so only `batch_key`'s ("alone", id) would split them; patch it to group them all.
    return Job(f"{name:0>16}", f"/nowhere/{name}.png", (StyleRef("/nowhere/s.png"),), Params(), f"{name}.png")


@pytest.fixture(autouse=True)
def _one_group_key(monkeypatch):
    monkeypatch.setattr("pipeline.executors.base.batch_key", lambda job, shape: "same")


def record(j: Job, status: str = "done"):
    r = failed_record(j, "boom", "cpu", "2026-01-01T00:00:00.000+00:00", 0.0, status)
    return r if status != "done" else replace(r, status="done", error=None)


class Scripted(Executor):
    """Worker behaviour: `script(slot, jobs, n)` -> events (kind, job_id, payload) for the n-th group."""

    def __init__(self, script, workers: int = 1, start_fails: int = 0, **options):
        super().__init__([Slot(i, "cpu") for i in range(workers)], Path("/nowhere"),
                         ExecutorOptions(**options), StopFlags(), clock=lambda: self.now)
        self.now, self.script, self.start_fails = 0.0, script, start_fails
        self.queue: deque = deque()
        self.groups: list[list[str]] = []
        self.kills: list[int] = []
        self.on_poll = None

    def start_slot(self, slot):
        if self.start_fails:
            self.start_fails -= 1
            self.queue.append(("exited", slot.index, None, "worker exited with code 1"))
        else:
            self.queue.append(("ready", slot.index, None, None))

    def send(self, slot, jobs):
        self.groups.append([j.job_id.lstrip("0") for j in jobs])
        for kind, job_id, payload in self.script(slot, jobs, len(self.groups)):
            self.queue.append((kind, slot.index, job_id, payload))

    def poll(self, timeout):
        self.now += timeout
        if self.on_poll:
            self.on_poll(self)
        events = list(self.queue)
        self.queue.clear()
        return events

    def stop_slot(self, slot, kill):
        if kill:
            self.kills.append(slot.index)
        self.queue = deque(e for e in self.queue if e[1] != slot.index)


class Recorder:
    def __init__(self):
        self.records, self.retries, self.messages = {}, [], []

    def job_started(self, slot, job): pass
    def job_progress(self, slot, job, step, total, loss): pass
    def job_recorded(self, job, record): self.records[job.job_id.lstrip("0")] = record
    def job_retry(self, job, error, attempt): self.retries.append((job.job_id.lstrip("0"), attempt))
    def message(self, text): self.messages.append(text)


def started_then(jobs, *, die=False, hang=(), fail=()):
    events = [("started", j.job_id, None) for j in jobs]
    if die:
        return events + [("exited", None, "worker died from SIGKILL")]
    return events + [("record", j.job_id, record(j, "failed" if j.job_id.lstrip("0") in fail else "done"))
                     for j in jobs if j.job_id.lstrip("0") not in hang]


def run(ex, names):
    listener = Recorder()
    counts = ex.run([job(n) for n in names], listener)
    return counts, listener


def test_a_poison_job_fails_alone_and_its_batch_mates_run_one_at_a_time():
    def script(slot, jobs, n):
        # The worker dies whenever it runs job "p"; the others finish.
        return started_then(jobs, die=any(j.job_id.endswith("p") for j in jobs))

    ex = Scripted(script, batch_size=4, retries=0)
    counts, seen = run(ex, ["a", "b", "p", "d"])
    assert ex.groups == [["a", "b", "p", "d"], ["a"], ["b"], ["p"], ["d"]]    # back one at a time
    # With no retries at all, the group's death was nobody's fault: only p's death alone counts.
    assert {k: (r.status, r.attempts) for k, r in seen.records.items()} == {
        "a": ("done", 2), "b": ("done", 2), "d": ("done", 2), "p": ("failed", 2)}
    assert seen.records["p"].error == "worker died from SIGKILL, 2 attempts"
    assert counts == {"done": 3, "failed": 1, "retried": 4, "respawned": 2}


def test_retries_count_only_deaths_a_job_had_alone():
    ex = Scripted(lambda slot, jobs, n: started_then(jobs, die=jobs[0].job_id.endswith("p")), batch_size=2, retries=2)
    counts, seen = run(ex, ["p", "a"])
    assert ex.groups == [["p", "a"], ["p"], ["p"], ["p"], ["a"]]   # a retry goes first
    assert (seen.records["p"].status, seen.records["p"].attempts) == ("failed", 4)
    assert (seen.records["a"].status, seen.records["a"].attempts) == ("done", 2)


def test_jobs_that_had_not_started_go_back_without_an_attempt():
    def script(slot, jobs, n):
        if n == 1:   # two of four started, then the worker died
            return [("started", jobs[0].job_id, None), ("started", jobs[1].job_id, None),
                    ("exited", None, "worker died from SIGSEGV")]
        return started_then(jobs)

    ex = Scripted(script, batch_size=4)
    counts, seen = run(ex, ["a", "b", "c", "d"])
    # Not-started jobs may share a batch again; the started ones run alone.
    assert ex.groups == [["a", "b", "c", "d"], ["a"], ["b"], ["c", "d"]]
    assert {k: r.attempts for k, r in seen.records.items()} == {"a": 2, "b": 2, "c": 1, "d": 1}
    assert seen.retries == [("a", 1), ("b", 1)]


def test_the_timeout_counts_from_the_start_on_the_worker_not_from_dispatch():
    def script(slot, jobs, n):
        return []            # "started" comes later, after a slow transfer

    ex = Scripted(script, timeout=10)

    def on_poll(ex):
        if ex.now == pytest.approx(50.0):             # the worker starts the job at t = 50
            ex.queue.append(("started", 0, job("a").job_id, None))
        if ex.now == pytest.approx(59.8):             # 9.8 s after its start: not late yet
            assert not ex.kills
    ex.on_poll = on_poll
    counts, seen = run(ex, ["a"])
    r = seen.records["a"]
    assert (r.status, r.error, r.attempts) == ("timeout", "timed out after 10s (killed)", 1)
    assert ex.kills == [0] and 60.0 < ex.now < 60.3
    assert counts == {"done": 0, "failed": 1, "retried": 0, "respawned": 1}


def test_a_timeout_in_a_batch_runs_the_batch_mates_alone_and_times_out_the_hung_job_alone():
    def script(slot, jobs, n):
        # h hangs, and in a batch it holds up its batch-mate too.
        return started_then(jobs, hang=("h", "a") if n == 1 else ("h",))

    ex = Scripted(script, batch_size=2, timeout=5)
    counts, seen = run(ex, ["h", "a"])
    # Both were unfinished at the timeout: whose fault is unknown, so both run again alone.
    assert ex.groups == [["h", "a"], ["h"], ["a"]]
    assert (seen.records["h"].status, seen.records["h"].attempts) == ("timeout", 2)
    assert (seen.records["a"].status, seen.records["a"].attempts) == ("done", 2)


def test_a_job_that_fails_on_its_own_is_recorded_not_retried():
    ex = Scripted(lambda slot, jobs, n: started_then(jobs, fail=("b",)), batch_size=4)
    counts, seen = run(ex, ["a", "b", "c"])
    assert ex.groups == [["a", "b", "c"]]
    assert (seen.records["b"].status, seen.records["b"].attempts) == ("failed", 1)
    assert counts == {"done": 2, "failed": 1, "retried": 0, "respawned": 0}


def test_three_start_up_failures_retire_a_slot_and_no_slot_left_is_an_error():
    ex = Scripted(lambda slot, jobs, n: started_then(jobs), start_fails=2)
    counts, seen = run(ex, ["a"])          # two failures, then it starts: the job runs
    assert seen.records["a"].status == "done" and len(seen.messages) == 2
    with pytest.raises(DeviceError, match="every worker failed to start"):
        run(Scripted(lambda slot, jobs, n: started_then(jobs), start_fails=3), ["a"])


def test_ctrl_c_once_lets_the_running_group_finish_and_dispatches_nothing_more():
    def script(slot, jobs, n):
        ex.flags.stop = True                 # Ctrl-C while the first group runs
        return started_then(jobs)

    ex = Scripted(script)
    counts, seen = run(ex, ["a", "b", "c"])
    assert ex.groups == [["a"]] and list(seen.records) == ["a"] and ex.kills == []


def test_ctrl_c_twice_stops_the_running_group_and_records_nothing():
    def script(slot, jobs, n):
        ex.flags.stop = ex.flags.abort = True
        return [("started", j.job_id, None) for j in jobs]

    ex = Scripted(script, workers=2)
    counts, seen = run(ex, ["a", "b", "c"])
    assert ex.groups == [["a"], ["b"]] and seen.records == {} and sorted(ex.kills) == [0, 1]
    assert counts == {"done": 0, "failed": 0, "retried": 0, "respawned": 0}


def test_ray_scratch_sweep_removes_only_this_runs_own_folders(tmp_path, monkeypatch):
    import os
    import subprocess
    import tempfile

    from pipeline.executors.ray_actor import sweep_scratch

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen(["true"])
    gone.wait()                                               # a pid no process has any more
    dead = tmp_path / f"nst-batch-r1-{gone.pid}-abc"
    live = tmp_path / f"nst-batch-r1-{os.getpid()}-def"
    other_run = tmp_path / f"nst-batch-r2-{gone.pid}-ghi"
    victim = tmp_path / "someone-elses"
    for folder in (dead, live, other_run, victim):
        folder.mkdir()
        (folder / "file").write_text("keep?")
    trap = tmp_path / f"nst-batch-r1-{gone.pid}-link"
    trap.symlink_to(victim, target_is_directory=True)         # another user's symlink into a folder
    sweep_scratch("r1")
    assert not dead.exists() and live.exists() and other_run.exists()
    assert trap.is_symlink() and (victim / "file").read_text() == "keep?"
    sweep_scratch("r1", all_of_run=True)                      # the run is over: all of its folders
    assert not live.exists() and other_run.exists() and (victim / "file").exists() and trap.is_symlink()


def test_where_a_dead_workers_events_can_be_lost_its_group_counts_as_started():
    """Ray fetches an actor's events in batches: a poison job can kill its actor before the
    driver hears "started". The group must then count as started (attempts, one at a time),
    not as a start-up failure that retires the slot after three deaths."""
    def script(slot, jobs, n):
        if any(j.job_id.endswith("p") for j in jobs):
            return [("exited", None, "ray actor lost")]          # died; no event reached us
        return started_then(jobs)

    ex = Scripted(script, batch_size=4, retries=1)
    ex.events_lost_on_death = True
    counts, seen = run(ex, ["a", "p", "b"])
    assert ex.groups == [["a", "p", "b"], ["a"], ["p"], ["p"], ["b"]]
    assert {k: (r.status, r.attempts) for k, r in seen.records.items()} == {
        "a": ("done", 2), "b": ("done", 2), "p": ("failed", 3)}
    assert seen.records["p"].error == "ray actor lost, 3 attempts"
    assert not any("exited before running a job" in m for m in seen.messages)

"""One record per job, and sick devices retired: the executor contract's rules for jobs a
worker never reports and for failures that are the device's (executors/base.py, health.py).

The scripted executor and fake clock of test_executor_base.py: no process, no sleep. A run
that would never end fails at a fake minute instead of hanging the suite.
"""
from __future__ import annotations

from dataclasses import replace

import pytest

from pipeline.executors.health import device_fault, unexplained
from test_executor_base import Scripted, job, record, run, started_then
from test_executor_base import _one_group_key  # noqa: F401  (the autouse fixture: one batch key)

ILLEGAL = "RuntimeError: CUDA error: an illegal memory access was encountered"


def never_hang(ex: Scripted, then=None) -> None:
    def on_poll(ex):
        if ex.now > 60:
            raise AssertionError(f"the run did not end; groups so far: {ex.groups}")
        if then:
            then(ex)
    ex.on_poll = on_poll


def failing(jobs, error: str):
    events = [("started", j.job_id, None) for j in jobs]
    return events + [("record", j.job_id, replace(record(j, "failed"), error=error)) for j in jobs]


def done_with(jobs):
    return [("group_done", None, [j.job_id for j in jobs])]


def test_a_job_the_worker_returns_no_record_for_is_failed_and_retried_by_the_normal_rules():
    def script(slot, jobs, n):
        # "m" is started but never recorded (a save that raised past the worker's handler).
        events = started_then([j for j in jobs if not j.job_id.endswith("m")])
        events += [("started", j.job_id, None) for j in jobs if j.job_id.endswith("m")]
        return events + done_with(jobs)

    ex = Scripted(script, batch_size=3, retries=1)
    never_hang(ex)
    counts, seen = run(ex, ["a", "m", "b"])
    # m was the only unfinished job of its group, so the loss is its own (as a worker's death
    # would be): charged, back alone, then failed once its retries are spent.
    assert ex.groups == [["a", "m", "b"], ["m"]]
    assert {k: (r.status, r.attempts) for k, r in seen.records.items()} == {
        "a": ("done", 1), "b": ("done", 1), "m": ("failed", 2)}
    assert seen.records["m"].error == "worker returned no result for this job, 2 attempts"
    assert seen.retries == [("m", 1)]
    assert counts == {"done": 2, "failed": 1, "retried": 1, "respawned": 0}


def test_a_batch_without_records_goes_back_one_job_at_a_time_uncharged():
    def script(slot, jobs, n):
        if n == 1:   # the whole batch unrecorded: whose fault is unknown
            return [("started", j.job_id, None) for j in jobs] + done_with(jobs)
        return started_then(jobs) + done_with(jobs)

    ex = Scripted(script, batch_size=2, retries=0)
    never_hang(ex)
    counts, seen = run(ex, ["a", "b"])
    assert ex.groups == [["a", "b"], ["a"], ["b"]]
    assert {k: (r.status, r.attempts) for k, r in seen.records.items()} == {"a": ("done", 2), "b": ("done", 2)}


def test_a_second_record_of_a_job_is_ignored():
    def script(slot, jobs, n):
        return started_then(jobs) + started_then(jobs)[len(jobs):] + done_with(jobs)

    ex = Scripted(script, batch_size=2)
    never_hang(ex)
    counts, seen = run(ex, ["a", "b"])
    assert counts["done"] == 2 and set(seen.records) == {"a", "b"}


@pytest.mark.parametrize("error, theirs", [
    (ILLEGAL, True),
    ("AcceleratorError: CUDA error: unspecified launch failure", True),
    ("RuntimeError: cudaErrorIllegalAddress", True),
    ("CUDA out of memory at size 512 on cuda:0; lower size or run fewer workers per device", False),
    ("OutOfMemoryError: CUDA error: out of memory", False),
    ("truncated or corrupt image: a.png (image file is truncated)", False),
    (None, False),
])
def test_which_errors_are_the_devices(error, theirs):
    assert device_fault(error) is theirs


@pytest.mark.parametrize("error, odd", [
    ("RuntimeError: the loss is nan on every step", True),
    ("MemoryError", True),
    ("truncated or corrupt image: a.png (image file is truncated)", False),
    ("CUDA out of memory at size 512 on cuda:0; lower size or run fewer workers per device", False),
    ("saving out/a.png failed: ValueError: bad", False),
])
def test_which_failures_count_towards_a_sick_streak(error, odd):
    assert unexplained(error) is odd


def test_a_sick_device_is_restarted_once_then_retired_and_its_jobs_run_elsewhere_uncharged():
    on_sick: list[list[str]] = []

    def script(slot, jobs, n):
        if slot.index == 1:
            on_sick.append([j.job_id.lstrip("0") for j in jobs])
            return failing(jobs, ILLEGAL)
        return started_then(jobs)

    ex = Scripted(script, workers=2, retries=0)
    never_hang(ex)
    counts, seen = run(ex, ["a", "b", "c", "d", "e", "f"])
    assert {k: (r.status, r.attempts, r.worker) for k, r in seen.records.items()} == {
        k: ("done", 1, 0) for k in "abcdef"}
    assert seen.retries == [] and counts["failed"] == 0 and counts["retried"] == 0
    assert [len(g) for g in on_sick] == [1, 1]    # worker 1 ran once, and once more after its restart
    assert ex.retired_workers == [
        f"worker 1 (cpu) was retired after a restart: its device kept failing ({ILLEGAL}); "
        "its jobs went to the other workers"]
    assert any(m.startswith("worker 1 (cpu) restarted: its device failed") for m in seen.messages)
    assert any(m.startswith("worker 1 (cpu) retired") for m in seen.messages)


@pytest.mark.parametrize("workers", [1, 2])
def test_when_every_device_is_retired_each_job_gets_a_failed_record_naming_them(workers):
    ex = Scripted(lambda slot, jobs, n: failing(jobs, ILLEGAL), workers=workers, retries=2)
    never_hang(ex)
    counts, seen = run(ex, ["a", "b", "c"])
    devices = ", ".join(f"worker {i} (cpu)" for i in range(workers))
    assert {k: r.status for k, r in seen.records.items()} == {k: "failed" for k in "abc"}
    for r in seen.records.values():
        assert r.error == f"no healthy device left: {devices} retired for device errors (see the run's log)"
    assert len(ex.retired_workers) == workers and seen.retries == []


def test_a_worker_whose_jobs_all_fail_while_another_succeeds_is_sick():
    """Worker 1 fails every job at once (not a CUDA error: a device that computes garbage);
    worker 0 is slow. Worker 1's failures wait for a comparison instead of emptying the queue."""
    later: list = []

    def script(slot, jobs, n):
        if slot.index == 1:
            return failing(jobs, "RuntimeError: the loss is nan on every step")
        later.append((ex.now + 1.0, started_then(jobs)))   # worker 0 answers a second later
        return []

    def deliver(ex):
        for due, events in [d for d in later if d[0] <= ex.now]:
            later.remove((due, events))
            ex.queue.extend((kind, 0, job_id, payload) for kind, job_id, payload in events)

    ex = Scripted(script, workers=2, retries=0)
    never_hang(ex, deliver)
    names = [f"j{i}" for i in range(10)]
    counts, seen = run(ex, names)
    assert {k: (r.status, r.attempts, r.worker) for k, r in seen.records.items()} == {
        k: ("done", 1, 0) for k in names}
    assert counts["failed"] == 0 and seen.retries == []
    assert len(ex.retired_workers) == 1 and ex.retired_workers[0].startswith(
        "worker 1 (cpu) was retired after a restart: its device kept failing (its last 3 jobs failed "
        "while other workers succeeded (the last: RuntimeError: the loss is nan on every step))")


def test_jobs_that_fail_everywhere_are_the_jobs_failures_and_no_worker_is_retired():
    ex = Scripted(lambda slot, jobs, n: failing(jobs, "not an image Pillow can read: x.png"), workers=2)
    never_hang(ex)
    counts, seen = run(ex, [f"j{i}" for i in range(8)])
    assert {r.error for r in seen.records.values()} == {"not an image Pillow can read: x.png"}
    assert len(seen.records) == 8 and counts["failed"] == 8 and ex.retired_workers == []
    assert all(r.attempts == 1 for r in seen.records.values())


def test_a_worker_given_only_bad_inputs_while_another_succeeds_is_not_sick():
    def script(slot, jobs, n):
        if slot.index == 1:
            return failing(jobs, "truncated or corrupt image: x.png (image file is truncated)")
        return started_then(jobs)

    ex = Scripted(script, workers=2)
    never_hang(ex)
    counts, seen = run(ex, [f"j{i}" for i in range(8)])
    assert ex.retired_workers == [] and counts["failed"] == 4 and counts["done"] == 4
    assert {r.worker for r in seen.records.values() if r.status == "failed"} == {1}


def test_a_job_that_breaks_the_device_by_itself_fails_alone_and_no_device_is_retired():
    """One job triggers a CUDA error wherever it runs (a kernel it alone breaks). After the
    restart the other jobs succeed, so its second fault is its own: its record stands."""
    def script(slot, jobs, n):
        return failing(jobs, ILLEGAL) if jobs[0].job_id.endswith("p") else started_then(jobs)

    ex = Scripted(script, retries=2)
    never_hang(ex)
    counts, seen = run(ex, ["a", "p", "b", "c"])
    assert ex.groups == [["a"], ["p"], ["b"], ["c"], ["p"]]       # p waits until the others ran
    assert {k: (r.status, r.attempts) for k, r in seen.records.items()} == {
        "a": ("done", 1), "b": ("done", 1), "c": ("done", 1), "p": ("failed", 1)}
    assert seen.records["p"].error == ILLEGAL
    assert ex.retired_workers == [] and counts["respawned"] == 1 and seen.retries == []

"""The run's ETA, driven by a fake clock: no timing, no processes."""
from __future__ import annotations

import pytest

from pipeline.views.eta import EtaModel, format_eta, remaining_work


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_remaining_work_walks_the_stages_in_order():
    stages = [(100, 10), (400, 5)]            # 10 evaluations at 100 px, then 5 at 400 px
    assert remaining_work(stages, 0) == 10 * 100 + 5 * 400
    assert remaining_work(stages, 4) == 6 * 100 + 5 * 400
    assert remaining_work(stages, 12) == 3 * 400
    assert remaining_work(stages, 99) == 0


def test_unknown_until_a_running_job_reports_then_exact_for_a_steady_worker():
    clock = Clock()
    eta = EtaModel(clock)
    for j in "abc":
        eta.add(j, [(1000, 10)])
    assert eta.seconds_left() is None          # nothing measured: no guess
    eta.started(0, "a")
    assert eta.seconds_left() is None
    clock.t = 2.0
    eta.progress("a", 4)                      # 4000 px-evals in 2 s: 2000/s
    # left: a 6000, b and c 10000 each = 26000 / 2000 = 13 s, before any job has ended
    assert eta.seconds_left() == pytest.approx(13.0)
    clock.t = 5.0
    eta.progress("a", 10)
    eta.finished("a")
    assert eta.seconds_left() == pytest.approx(10.0)


def test_stages_of_different_sizes_are_weighed_by_their_pixels():
    clock = Clock()
    eta = EtaModel(clock)
    eta.add("a", [(100, 10), (400, 10)])      # a coarse and a fine stage
    eta.started(0, "a")
    clock.t = 1.0
    eta.progress("a", 10)                     # the coarse stage: 1000 px-evals per second
    # the fine stage left: 4000 px-evals at 1000/s, not 10 evaluations at the coarse pace
    assert eta.seconds_left() == pytest.approx(4.0)


def test_several_workers_add_their_throughput_and_an_unmeasured_one_counts_as_the_mean():
    clock = Clock()
    eta = EtaModel(clock)
    for j in "abcdef":
        eta.add(j, [(1000, 10)])
    eta.started(0, "a")
    eta.started(1, "b")
    eta.started(2, "c")
    clock.t = 1.0
    eta.progress("a", 2)                      # worker 0: 2000/s
    eta.progress("b", 4)                      # worker 1: 4000/s
    # worker 2 has not reported: counted as the mean, 3000/s; together 9000/s
    left = 8000 + 6000 + 10000 + 3 * 10000
    assert eta.seconds_left() == pytest.approx(left / 9000)


def test_a_batch_is_measured_as_one_worker_doing_all_its_jobs_work():
    clock = Clock()
    eta = EtaModel(clock)
    for j in "abcdef":
        eta.add(j, [(1000, 10)])
    for j in "abcd":                          # one worker, one batch of four
        eta.started(0, j)
    clock.t = 2.0
    for j in "abcd":                          # each batch-mate reports the same evaluations
        eta.progress(j, 5)
    # 4 × 5000 px-evals in 2 s (not 4 × 2 s): 10000/s; left 4 × 5000 + 2 × 10000 = 40000
    assert eta.workers[0].batch == 4
    assert eta.seconds_left() == pytest.approx(4.0)


def test_a_retry_puts_all_of_the_jobs_work_back_and_a_failure_removes_it():
    clock = Clock()
    eta = EtaModel(clock)
    eta.add("a", [(1000, 10)])
    eta.add("b", [(1000, 10)])
    eta.started(0, "a")
    clock.t = 1.0
    eta.progress("a", 5)                      # 5000/s
    assert eta.seconds_left() == pytest.approx(3.0)
    eta.retry("a")                            # the worker died: a starts again from scratch
    assert eta.seconds_left() == pytest.approx(4.0)
    eta.finished("b")                         # b failed for good
    assert eta.seconds_left() == pytest.approx(2.0)


def test_idle_time_between_jobs_is_not_counted_as_slow_work():
    clock = Clock()
    eta = EtaModel(clock)
    for j in "ab":
        eta.add(j, [(1000, 10)])
    eta.started(0, "a")
    clock.t = 1.0
    eta.progress("a", 10)
    eta.finished("a")
    clock.t = 60.0                            # the worker waited a minute for its next group
    eta.started(0, "b")
    clock.t = 61.0
    eta.progress("b", 10)
    assert eta.workers[0].throughput() == pytest.approx(10000.0)


def test_format():
    assert format_eta(None) == "ETA --"
    assert format_eta(42) == "ETA 42s"
    assert format_eta(125) == "ETA 2m05s"
    assert format_eta(3600 + 23 * 60 + 10) == "ETA 1h23m"
    assert format_eta(0, now=0).startswith("ETA 0s (~")

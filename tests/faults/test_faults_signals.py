"""Real `nst-batch run` processes: two at once, kill -9 of the parent, Ctrl-C once and twice.

Each test drives `python -m pipeline.cli run` in its own session, signals the parent only (as
a terminal's Ctrl-C or the OOM killer would hit it), then checks that no process is left,
that the files and the index agree, and that running the same command again finishes the
batch without redoing anything finished.
"""
from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest

from faultkit import (Run, assert_consistent, assert_no_orphans, done, make_project, one_cpu, run_cli,
                      sqlite_integrity, wait_for)

pytestmark = pytest.mark.slow
BUSY = ("error: another nst-batch run is using {out} (lock .nst-batch.lock); wait for it to finish "
        "or choose another output folder\n")


def finished(out: Path) -> dict[str, tuple[str, int]]:
    """job_id -> (finished_at, image mtime): what must not change when a rerun skips a job."""
    return {k: (v["finished_at"], (out / v["output"]).stat().st_mtime_ns) for k, v in done(out).items()}


def rerun_finishes(logs: Path, manifest: Path, out: Path, before: dict[str, tuple[str, int]]) -> None:
    rerun = run_cli(logs, "run", str(manifest), name="rerun")
    assert rerun.proc.returncode == 0, rerun.describe()
    assert f"4 job(s): {len(before)} already done;" in rerun.stdout
    assert "Traceback" not in rerun.stdout + rerun.stderr
    after = finished(out)
    assert len(after) == 4
    assert {k: after[k] for k in before} == before, "a finished job was run again"
    assert_consistent(out, expect_done=4)


def test_second_run_is_refused_then_kill9_of_the_parent_then_the_same_command_finishes(tmp_path):
    manifest = make_project(tmp_path, contents=2, styles=2, steps=20)   # 4 jobs
    out, logs = tmp_path / "out", tmp_path / "logs"
    # Two runs of one output folder at once: whichever takes the lock runs, the other refuses.
    a = Run(logs, "run", str(manifest), name="a", cpus=one_cpu(0))
    b = Run(logs, "run", str(manifest), name="b", cpus=one_cpu(1))
    loser = wait_for(lambda: next((r for r in (a, b) if r.proc.poll() is not None), None), 120,
                     what="one of two runs to refuse")
    winner = b if loser is a else a
    assert loser.proc.returncode == 2, loser.describe()
    assert loser.stderr == BUSY.format(out=out) and loser.stdout == ""
    assert winner.proc.poll() is None, winner.describe()

    # kill -9 of the parent once a job has finished: its workers notice and exit.
    wait_for(lambda: done(out), 180, winner, "a finished job")
    winner.signal(signal.SIGKILL)
    winner.proc.wait(30)
    assert_no_orphans(winner)
    before = finished(out)
    assert 1 <= len(before) < 4
    assert sqlite_integrity(out) == "ok"
    # The dead run's lock went with it: the same command runs, and finishes only what is left.
    rerun_finishes(logs, manifest, out, before)


def test_ctrl_c_once_finishes_running_jobs_twice_stops_them_and_a_rerun_finishes(tmp_path):
    manifest = make_project(tmp_path, contents=2, styles=2, steps=20)   # 4 jobs, seconds each
    out, logs = tmp_path / "out", tmp_path / "logs"

    once = Run(logs, "run", str(manifest), name="once")
    wait_for(lambda: done(out), 180, once, "a finished job")
    time.sleep(0.5)                     # the next job is now running
    once.signal(signal.SIGINT)
    assert once.wait() == 130, once.describe()
    assert "interrupted: finishing running jobs, starting no new ones" in once.stdout
    assert "interrupted: rerun the same command to finish the rest" in once.stdout
    assert "4 job(s): 0 already done; this run: " in once.stdout               # the summary
    assert "Traceback" not in once.stdout + once.stderr
    assert_no_orphans(once)
    after_once = finished(out)
    assert 1 <= len(after_once) <= 2, "Ctrl-C once let new jobs start"
    assert_consistent(out)              # the running job finished whole, or never started

    twice = Run(logs, "run", str(manifest), name="twice")
    wait_for(lambda: len(done(out)) > len(after_once), 180, twice, "another finished job")
    time.sleep(0.5)
    if len(done(out)) == 4:
        twice.wait()
        pytest.skip("the machine ran the last job faster than the test could interrupt it")
    twice.signal(signal.SIGINT)
    time.sleep(0.2)
    twice.signal(signal.SIGINT)
    assert twice.wait() == 130, twice.describe()
    assert "interrupted: stopping running jobs now" in twice.stdout
    assert "4 job(s): " in twice.stdout and "; this run: " in twice.stdout   # the summary
    assert "Traceback" not in twice.stdout + twice.stderr
    assert_no_orphans(twice)
    before = finished(out)
    assert len(before) < 4
    rerun_finishes(logs, manifest, out, before)

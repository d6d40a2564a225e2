"""Real `nst-batch run` processes: two at once, kill -9 of the parent, Ctrl-C once and twice.

Each test drives `python -m pipeline.cli run` in its own session, signals the parent only (as
a terminal's Ctrl-C or the OOM killer would hit it), then checks that no process is left,
that the files and the index agree, and that running the same command again finishes the
batch without redoing anything finished.
"""
from __future__ import annotations

import signal
from pathlib import Path

import pytest

from faultkit import (Hold, Run, assert_consistent, assert_no_orphans, done, make_project, one_cpu, run_cli,
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
    out, logs, hold = tmp_path / "out", tmp_path / "logs", Hold(tmp_path / "hold")
    # Two runs of one output folder at once: whichever takes the lock runs, the other refuses.
    # The winner's jobs wait for the test (the hold hook), so it is still running, however fast.
    a = Run(logs, "run", str(manifest), name="a", cpus=one_cpu(0), env=hold.env())
    b = Run(logs, "run", str(manifest), name="b", cpus=one_cpu(1), env=hold.env())
    loser = wait_for(lambda: next((r for r in (a, b) if r.proc.poll() is not None), None), 120,
                     what="one of two runs to refuse")
    winner = b if loser is a else a
    assert loser.proc.returncode == 2, loser.describe()
    assert loser.stderr == BUSY.format(out=out) and loser.stdout == ""
    assert winner.proc.poll() is None, winner.describe()

    # kill -9 of the parent while its second job runs: its worker notices and exits.
    first = hold.next_running(winner)
    hold.release(first)
    hold.next_running(winner, {first})
    winner.signal(signal.SIGKILL)
    winner.proc.wait(30)
    assert_no_orphans(winner)
    before = finished(out)
    assert set(before) == {first}
    assert sqlite_integrity(out) == "ok"
    # The dead run's lock went with it: the same command runs, and finishes only what is left.
    rerun_finishes(logs, manifest, out, before)


def test_ctrl_c_once_finishes_running_jobs_twice_stops_them_and_a_rerun_finishes(tmp_path):
    manifest = make_project(tmp_path, contents=2, styles=2, steps=20)   # 4 jobs, seconds each
    out, logs = tmp_path / "out", tmp_path / "logs"

    # Ctrl-C once while the second job runs (held until the test has signalled): it finishes,
    # no third job starts.
    hold = Hold(tmp_path / "hold-once")
    once = Run(logs, "run", str(manifest), name="once", env=hold.env())
    first = hold.next_running(once)
    hold.release(first)
    second = hold.next_running(once, {first})
    once.signal(signal.SIGINT)
    wait_for(lambda: "interrupted: finishing running jobs, starting no new ones" in once.stdout, 60, once,
             "the first Ctrl-C's message")
    hold.release_all()
    assert once.wait() == 130, once.describe()
    assert "interrupted: rerun the same command to finish the rest" in once.stdout
    assert "4 job(s): 0 already done; this run: " in once.stdout               # the summary
    assert "this run: 2 done, 0 failed, 2 pending" in " ".join(once.stdout.split())   # what is left
    assert "Traceback" not in once.stdout + once.stderr
    assert_no_orphans(once)
    after_once = finished(out)
    assert set(after_once) == {first, second}, "Ctrl-C once stopped a running job or started a new one"
    assert_consistent(out, expect_done=2)   # the running job finished whole

    # Ctrl-C twice while the fourth job runs (held): the second Ctrl-C kills it; the third,
    # finished before, stays finished.
    hold = Hold(tmp_path / "hold-twice")
    twice = Run(logs, "run", str(manifest), name="twice", env=hold.env())
    third = hold.next_running(twice)
    hold.release(third)
    hold.next_running(twice, {third})
    twice.signal(signal.SIGINT)
    # Two signals at once could arrive as one: send the second once the first was handled.
    wait_for(lambda: "interrupted: finishing running jobs" in twice.stdout, 60, twice, "the first Ctrl-C's message")
    twice.signal(signal.SIGINT)
    assert twice.wait() == 130, twice.describe()
    assert "interrupted: stopping running jobs now" in twice.stdout
    assert "4 job(s): 2 already done; this run: " in twice.stdout   # the summary
    assert "Traceback" not in twice.stdout + twice.stderr
    assert_no_orphans(twice)
    before = finished(out)
    assert set(before) == {first, second, third}
    rerun_finishes(logs, manifest, out, before)

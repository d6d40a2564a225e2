"""A sick device (a sticky CUDA error: every batch fails at once) is retired, not allowed to
empty the queue into failed rows while the healthy worker works.

Real `nst-batch run` processes on two CPU workers; worker 1 is made sick through the
NST_BATCH_FAULT_SICK_WORKER hook (every batch raises "CUDA error: an illegal memory access").
The healthy worker holds its first job (NST_BATCH_FAULT_HOLD) until the sick one has been
restarted and retired, so the test does not depend on which worker is faster.
"""
from __future__ import annotations

import pytest

from faultkit import Hold, Run, assert_consistent, assert_no_orphans, make_project, sidecars, wait_for
from pipeline import fault_hooks

pytestmark = pytest.mark.slow


def test_a_sick_worker_is_restarted_once_then_retired_and_the_healthy_one_does_every_job(tmp_path):
    manifest = make_project(tmp_path, contents=3)
    out = tmp_path / "out"
    hold = Hold(tmp_path / "hold")
    env = {**hold.env(), fault_hooks.SICK_WORKER: "1"}
    run = Run(tmp_path / "logs", "run", str(manifest), "--workers", "2", env=env)
    try:
        # Worker 1 fails a job, is restarted, fails again and is retired, while worker 0 holds
        # its first job. (Before this guarantee, worker 1's failures were recorded instead.)
        wait_for(lambda: "retired: its device kept failing" in run.stdout
                 or any(r["status"] != "done" for r in sidecars(out).values() if out.exists()),
                 180, run, "worker 1 to be retired")
        hold.release_all()
        assert run.wait(240) == 0, run.describe()
    finally:
        if run.proc.poll() is None:
            run.kill_all()
    records = assert_consistent(out, expect_done=3)
    said = " ".join(run.stdout.split())     # the display wraps long lines
    assert {(r["status"], r["attempts"], r["worker"]) for r in records.values()} == {("done", 1, 0)}
    illegal = f"RuntimeError: {fault_hooks.ILLEGAL_ACCESS}"
    assert f"worker 1 (cpu) restarted: its device failed ({illegal}); 1 job(s) go back uncharged" in said
    assert f"worker 1 (cpu) retired: its device kept failing ({illegal}); no more jobs go to it" in said
    # The summary: no job failed or was charged a retry, and the retired device is named.
    assert "this run: 3 done, 0 failed wrote" in said
    assert (f"warning: worker 1 (cpu) was retired after a restart: its device kept failing ({illegal}); "
            "its jobs went to the other workers") in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert_no_orphans(run)

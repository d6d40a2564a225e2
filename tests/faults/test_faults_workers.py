"""Workers that die: kill -9 mid-job and mid-write, a job past its timeout, torn files on resume."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
from pathlib import Path

import pytest

from faultkit import Hold, Watcher, assert_consistent, index_rows, make_project, pinned
from pipeline.run.orchestrate import RunOptions, classify, prepare, run_manifest
from pipeline.fault_hooks import KILL_IN_WRITE as FAULT_KILL_IN_WRITE, HOLD as FAULT_HOLD, KILL_ONCE as FAULT_KILL_ONCE
from pipeline.imaging import atomic_write_bytes, remove_partial_writes


@pytest.mark.slow
def test_worker_killed_mid_job_and_mid_write_is_retried_and_nothing_torn_is_ever_visible(tmp_path, monkeypatch):
    manifest = make_project(tmp_path, contents=3, steps=6)
    out = tmp_path / "out"
    mid_job, mid_write = tmp_path / "killed-mid-job", tmp_path / "killed-mid-write"
    # The first job's worker dies at step 2; its retry's worker dies with the image's temp file
    # complete but not yet renamed; the third attempt finishes.
    monkeypatch.setenv(FAULT_KILL_ONCE, str(mid_job))
    monkeypatch.setenv(FAULT_KILL_IN_WRITE, str(mid_write))
    with Watcher(out) as watcher, pinned():
        summary = run_manifest(manifest, RunOptions(live=False, retries=2))
    assert mid_job.exists() and mid_write.exists(), "a fault hook did not fire"
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (3, 0, 2, 2)
    # Every image and sidecar the watcher saw under its final name was whole, at every moment.
    assert watcher.problems == []
    assert watcher.files_checked() == 6
    records = assert_consistent(out, expect_done=3)   # also: the killed write's temp file is gone
    assert sorted(r["attempts"] for r in records.values()) == [1, 1, 3]
    assert sorted(r["attempts"] for r in index_rows(out).values()) == [1, 1, 3]


def _write_then_die(path: str, marker: str) -> None:
    os.environ[FAULT_KILL_IN_WRITE] = marker
    atomic_write_bytes(Path(path), b"new contents")


def test_a_write_killed_before_its_rename_leaves_the_old_file_and_a_hidden_temp(tmp_path):
    target = tmp_path / "job" / "0123456789abcdef.png"
    atomic_write_bytes(target, b"old contents")
    # A forked child is a worker process as far as the hook is concerned (it has a parent).
    child = multiprocessing.get_context("fork").Process(
        target=_write_then_die, args=(str(target), str(tmp_path / "marker")))
    child.start()
    child.join(30)
    assert child.exitcode == -signal.SIGKILL
    assert target.read_bytes() == b"old contents"
    temps = [p.name for p in target.parent.iterdir() if p != target]
    assert len(temps) == 1 and temps[0].startswith(".0123456789abcdef.png.") and temps[0].endswith(".tmp")
    assert (target.parent / temps[0]).read_bytes() == b"new contents"
    # What the next run (or the retry) does with it; other hidden files are not touched.
    (target.parent / ".notes.tmp").write_text("someone else's")
    assert remove_partial_writes([target, target.with_suffix(".json")]) == 1
    assert sorted(p.name for p in target.parent.iterdir()) == [".notes.tmp", target.name]


def test_torn_or_missing_sidecars_mean_pending(tmp_path):
    manifest = make_project(tmp_path, contents=4, styles=1)
    m, jobs = prepare(manifest)
    out = m.output
    a, b, c, d = jobs
    for job in jobs:
        (out / job.output).parent.mkdir(parents=True, exist_ok=True)
    # a: an image but no sidecar (killed between the two writes): pending, rerun.
    (out / a.output).write_bytes(b"\x89PNG image without its sidecar")
    # b: a sidecar cut short (a copy, not our writer: ours is atomic): pending.
    (out / b.sidecar).write_text('{"job_id": "' + b.job_id + '", "status": "do')
    # c: a done sidecar whose image is gone: pending.
    (out / c.sidecar).write_text(json.dumps({"job_id": c.job_id, "status": "done"}))
    # d: another job's sidecar under d's name: pending.
    (out / d.sidecar).write_text(json.dumps({"job_id": a.job_id, "status": "done"}))
    state = classify(jobs, out)
    assert [j.job_id for j in state.pending] == [j.job_id for j in jobs]
    assert state.done == state.failed == []


@pytest.mark.slow
def test_a_job_past_its_timeout_is_killed_and_recorded_and_the_rest_runs(tmp_path, monkeypatch):
    # Two jobs: one of 4 steps (under a second idle), and one held at its first step for ever by
    # the test-only hold hook: a hang that costs no CPU. The 4-step job is the only wall-clock
    # assumption left (a timeout is a clock): 15 s is ample for it on a busy machine too.
    manifest = make_project(tmp_path, contents=1, extra="grid: {steps: [4, 5]}\ntimeout: 15\n")
    _, jobs = prepare(manifest)
    quick, hung_job = sorted(jobs, key=lambda j: j.params.steps)
    hold = Hold(tmp_path / "hold")
    hold.release(quick.job_id)
    monkeypatch.setenv(FAULT_HOLD, str(hold.folder))
    with pinned():
        summary = run_manifest(manifest, RunOptions(live=False))
    assert (summary["done"], summary["failed"], summary.get("retried", 0)) == (1, 1, 0)
    records = assert_consistent(tmp_path / "out", expect_done=1)
    hung = next(r for r in records.values() if r["status"] != "done")
    assert hung["status"] == "timeout" and hung["job_id"] == hung_job.job_id
    assert hung["error"] == "timed out after 15s (killed)"
    assert index_rows(tmp_path / "out")[hung["job_id"]]["status"] == "timeout"
    # Resume keeps it as timed out; --retry-failed would run it again.
    m, jobs = prepare(manifest)
    assert [j.job_id for j in classify(jobs, m.output).failed] == [hung["job_id"]]

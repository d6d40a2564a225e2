"""Every job sent to a worker ends with exactly one record, whatever the worker does with it.

A save that raises something unexpected (an encoder's ValueError) used to take its job off
the batch's list without a record: the run waited for it forever. A record a worker never
sends is failed by the executor at the end of the group, on local processes and Ray actors.
The runs here have a timeout so that, on code without these guarantees, a test fails
instead of hanging.
"""
from __future__ import annotations

import pytest

from faultkit import assert_consistent, assert_no_orphans, cli_env, make_project, pinned, run_cli, sidecars
from pipeline import fault_hooks
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=["local", "ray"])
def executor(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return request.param


def test_a_save_that_raises_a_value_error_fails_its_job_and_the_run_ends(tmp_path):
    manifest = make_project(tmp_path, contents=3)
    _, jobs = prepare(manifest)
    victim = jobs[1]
    run = run_cli(tmp_path / "logs", "run", str(manifest), "--timeout", "120",
                  env=cli_env(**{fault_hooks.SAVE_ERROR: victim.job_id}), timeout=200)
    assert run.proc.returncode == 1, run.describe()          # one job failed: exit 1, no hang
    out = tmp_path / "out"
    records = assert_consistent(out, expect_done=2)
    failed = records[victim.job_id]
    assert (failed["status"], failed["attempts"]) == ("failed", 1)
    assert failed["error"] == (f"saving {out.resolve() / victim.output} failed: ValueError: injected "
                               f"encoder failure saving {victim.job_id}")
    assert "Traceback" not in run.stdout + run.stderr
    assert_no_orphans(run)


def test_a_record_the_worker_never_sends_is_failed_after_its_retries(tmp_path, monkeypatch, executor):
    manifest = make_project(tmp_path, contents=3)
    _, jobs = prepare(manifest)
    lost = jobs[0]
    monkeypatch.setenv(fault_hooks.DROP_RECORD, lost.job_id)
    with pinned():
        # The timeout only guards against a hang of the code before this guarantee.
        summary = run_manifest(manifest, RunOptions(live=False, executor=executor, retries=1, timeout=120))
    records = sidecars(tmp_path / "out")
    assert {k: (r["status"], r["attempts"]) for k, r in records.items()} == {
        **{j.job_id: ("done", 1) for j in jobs[1:]}, lost.job_id: ("failed", 2)}
    assert records[lost.job_id]["error"] == "worker returned no result for this job, 2 attempts"
    assert (summary["done"], summary["failed"], summary["retried"]) == (2, 1, 1)
    assert_consistent(tmp_path / "out", expect_done=2)

"""One contract, two executors: every test runs on local worker processes and on Ray actors.

Four compatible jobs (two photos of one shape × two styles) with `--batch-size 4` and one
worker, so each executor gets them as one group. Faults come from pipeline/fault_hooks.py in
the real worker processes; no test sleeps or races the work. Ray runs on a private local
instance with two CPUs, started once for the module (the rules themselves are tested without
processes in test_executor_base.py).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_content, make_style
from pipeline import fault_hooks
from pipeline.run.index import ResultsIndex
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.run.records import JobRecord

pytestmark = pytest.mark.slow
EXECUTORS = ["local", "ray"]


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(params=EXECUTORS)
def executor(request) -> str:
    if request.param == "ray":
        request.getfixturevalue("ray_instance")
    return request.param


def truncated_png(path: Path) -> Path:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    return path


def project(root: Path, bad_style: bool = False, contents: int = 2, second_style: bool = True) -> Path:
    (root / "photos").mkdir()
    (root / "styles").mkdir()
    for i in range(contents):
        make_content(root / "photos" / f"p{i}.png", seed=i)
    make_style(root / "styles" / "a.png", seed=1)
    if bad_style:
        truncated_png(root / "styles" / "cut.png")
    elif second_style:
        make_style(root / "styles" / "b.png", seed=2)
    manifest = root / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photos/]\nstyle: [styles/]\n"
                        "params: {size: 32, steps: 4}\ndevices: cpu\nworkers_per_device: 1\n")
    return manifest


def run(manifest: Path, executor: str, **options) -> tuple[dict, dict[str, JobRecord], list]:
    summary = run_manifest(manifest, RunOptions(live=False, executor=executor, batch_size=4, **options))
    m, jobs = prepare(manifest)
    sidecars = {j.job_id: json.loads((m.output / j.sidecar).read_text()) for j in jobs}
    with ResultsIndex(m.output) as index:
        rows = {r["job_id"]: r for r in index.rows()}
    # The index holds what the sidecars hold, field for field.
    assert set(rows) == set(sidecars) == {j.job_id for j in jobs}
    for job_id, sidecar in sidecars.items():
        record = JobRecord.from_dict(sidecar)
        assert record.as_dict() == sidecar
        row = rows[job_id]
        for key in ("status", "attempts", "error", "steps", "output", "content", "device", "width", "height"):
            assert row[key] == sidecar[key], key
        assert row["styles"] == sidecar["styles"] and row["params"] == sidecar["params"]
        image = m.output / record.output
        assert image.is_file() == record.done
    return summary, {k: JobRecord.from_dict(v) for k, v in sidecars.items()}, jobs


def test_a_group_of_four_compatible_jobs_runs_as_one_batch(tmp_path, executor):
    summary, records, jobs = run(project(tmp_path), executor)
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (4, 0, 0, 0)
    for job in jobs:
        r = records[job.job_id]
        assert (r.status, r.batch_size, r.attempts, r.steps, r.precision) == ("done", 4, 1, 4, "fp32")
        # The record names the user's files (not a Ray actor's scratch copies) and the real output.
        assert (r.content, r.styles, r.output) == (job.content, ((job.styles[0].path, 1.0),), job.output)
        assert (r.width, r.height) == (32, 27)
        with Image.open(tmp_path / "out" / job.output) as img:
            assert img.size == (32, 27)
        p = r.params
        assert r.loss_total == pytest.approx(p["content_weight"] * r.loss_content + p["style_weight"] * r.loss_style
                                             + p["tv_weight"] * (r.loss_tv or 0.0), rel=1e-4)


def test_a_worker_killed_mid_group_loses_no_job(tmp_path, executor, monkeypatch):
    marker = tmp_path / "killed-once"
    monkeypatch.setenv(fault_hooks.KILL_ONCE, str(marker))
    summary, records, jobs = run(project(tmp_path), executor)
    assert marker.exists(), "the fault hook did not fire"
    # All four had started in the batch: each is tried again, alone, and each finishes.
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (4, 0, 4, 1)
    assert {(r.status, r.attempts, r.batch_size) for r in records.values()} == {("done", 2, 1)}


def test_a_poison_job_fails_alone_after_its_retries(tmp_path, executor, monkeypatch):
    manifest = project(tmp_path)
    _, jobs = prepare(manifest)
    poison = jobs[1].job_id
    monkeypatch.setenv(fault_hooks.KILL_JOB, poison)
    summary, records, _ = run(manifest, executor, retries=1)
    # The group's death was nobody's in particular; then the poison job killed its worker alone,
    # was retried once (retries: 1), and killed it again.
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (3, 1, 5, 3)
    bad = records.pop(poison)
    assert (bad.status, bad.attempts) == ("failed", 3)
    assert bad.error.endswith(", 3 attempts")
    assert bad.error.startswith("worker died from SIGKILL" if executor == "local" else "ray actor lost")
    assert {(r.status, r.attempts, r.batch_size) for r in records.values()} == {("done", 2, 1)}


def test_a_truncated_style_fails_only_its_own_jobs(tmp_path, executor):
    summary, records, jobs = run(project(tmp_path, bad_style=True), executor)
    assert (summary["done"], summary["failed"], summary["retried"]) == (2, 2, 0)
    cut = str((tmp_path / "styles" / "cut.png").resolve())
    for job in jobs:
        r = records[job.job_id]
        if job.styles[0].path == cut:
            assert r.status == "failed" and r.attempts == 1
            assert r.error.startswith(f"truncated or corrupt image: {cut} (")
        else:
            # Its batch-mates went on in the batch they started in.
            assert (r.status, r.attempts, r.batch_size) == ("done", 1, 4)


def test_out_of_memory_at_batch_four_splits_the_batch_and_every_job_finishes(tmp_path, executor, monkeypatch):
    monkeypatch.setenv(fault_hooks.OOM_ABOVE, "2")
    summary, records, jobs = run(project(tmp_path), executor)
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (4, 0, 0, 0)
    assert {(r.status, r.attempts, r.batch_size) for r in records.values()} == {("done", 1, 2)}


def test_a_hung_job_is_killed_at_its_timeout_and_recorded(tmp_path, executor, monkeypatch):
    held = tmp_path / "held"
    held.mkdir()
    monkeypatch.setenv(fault_hooks.HOLD, str(held))     # never released: the job hangs
    summary, records, jobs = run(project(tmp_path, contents=1, second_style=False), executor, timeout=1)
    # Alone on its worker, the hung job is the one to blame: recorded as `timeout`, not retried.
    # (A timeout among batch-mates: test_executor_base.py.)
    assert (summary["done"], summary["failed"], summary["retried"], summary["respawned"]) == (0, 1, 0, 1)
    (r,) = records.values()
    assert (r.status, r.error, r.attempts, r.steps) == ("timeout", "timed out after 1s (killed)", 1, 0)

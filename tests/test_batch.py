"""The batch pipeline end to end on CPU: worker processes, resume, cache hits, retries, failures."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.run.orchestrate import RunOptions, classify, plan_manifest, prepare, run_manifest
from pipeline.run.index import ResultsIndex, reindex

pytestmark = pytest.mark.slow


def write_manifest(root: Path, name: str = "m.yaml", styles: str = "[styles/a.png, styles/b.png]",
                   extra: str = "") -> Path:
    path = root / name
    path.write_text(f"""version: 1
output: out-{path.stem}
content: [photos/]
style: {styles}
params: {{size: 32, steps: 4}}
devices: cpu
workers_per_device: 2
{extra}""")
    return path


@pytest.fixture
def project(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "styles").mkdir()
    for i in range(2):
        make_content(tmp_path / "photos" / f"p{i}.png", seed=i)
    make_style(tmp_path / "styles" / "a.png", seed=1)
    make_style(tmp_path / "styles" / "b.png", seed=2)
    return tmp_path


def opts(**kw) -> RunOptions:
    return RunOptions(live=False, **kw)


def index_rows(out: Path) -> dict[str, dict]:
    with ResultsIndex(out) as index:
        return {r["job_id"]: r for r in index.rows()}


def test_two_workers_resume_and_cache_hits(project):
    manifest = write_manifest(project)
    summary = run_manifest(manifest, opts())
    assert summary["done"] == 4 and summary["failed"] == 0 and summary["workers"] == ["cpu", "cpu"]
    m, jobs = prepare(manifest)
    rows = index_rows(m.output)
    assert set(rows) == {j.job_id for j in jobs}
    for job in jobs:
        row = rows[job.job_id]
        assert row["status"] == "done" and row["steps"] == 4 and row["device"] == "cpu"
        assert (m.output / job.output).is_file() and row["output"] == job.output
        sidecar = json.loads((m.output / job.sidecar).read_text())
        assert sidecar["job_id"] == job.job_id and sidecar["loss_total"] == pytest.approx(row["loss_total"])
        assert row["loss_total"] == pytest.approx(row["params"]["content_weight"] * row["loss_content"]
                                                  + row["params"]["style_weight"] * row["loss_style"], rel=1e-4)
    assert (m.output / "manifest.resolved.yaml").is_file()
    # The index can be queried with plain sqlite3.
    with sqlite3.connect(m.output / "index.sqlite") as db:
        assert db.execute("select count(*) from jobs where status='done'").fetchone()[0] == 4

    # A rerun skips everything and starts no worker.
    again = run_manifest(manifest, opts())
    assert again["to_run"] == 0 and again["skipped_done"] == 4

    # A second manifest over the same styles: every style target is a cache hit.
    second = write_manifest(project, "second.yaml", extra="grid: {content_weight: [2.0]}\n")
    assert plan_manifest(second)["targets_cached"] == plan_manifest(second)["targets_total"] == 2
    assert run_manifest(second, opts())["done"] == 4
    m2, _ = prepare(second)
    assert all(r["cache_hit"] for r in index_rows(m2.output).values())

    # --force reruns all; reindex rebuilds the same rows from the sidecars.
    assert run_manifest(manifest, opts(force=True, workers=1))["done"] == 4
    before = index_rows(m.output)
    (m.output / "index.sqlite").unlink()
    assert reindex(m.output) == 4
    after = index_rows(m.output)
    assert {k: v["loss_total"] for k, v in after.items()} == {k: v["loss_total"] for k, v in before.items()}


def test_killed_worker_is_retried_and_unreadable_image_fails_alone(project, monkeypatch):
    (project / "photos" / "broken.png").write_text("this is not a PNG")
    manifest = write_manifest(project, styles="[styles/a.png]")
    marker = project / "killed-once"
    monkeypatch.setenv("NST_BATCH_FAULT_KILL_ONCE", str(marker))
    summary = run_manifest(manifest, opts())
    assert marker.exists(), "the fault hook did not fire"
    assert summary["retried"] == 1 and summary["done"] == 2 and summary["failed"] == 1
    m, jobs = prepare(manifest)
    rows = index_rows(m.output)
    failed = [r for r in rows.values() if r["status"] == "failed"]
    assert len(failed) == 1 and failed[0]["content"].endswith("broken.png")
    assert failed[0]["error"].startswith("truncated or corrupt image") or \
        failed[0]["error"].startswith("not an image Pillow can read")
    done = [r for r in rows.values() if r["status"] == "done"]
    assert max(r["attempts"] for r in done) == 2
    # Failed jobs are kept on resume and rerun only with --retry-failed.
    state = classify(jobs, m.output)
    assert len(state.failed) == 1 and not state.pending
    assert run_manifest(manifest, opts())["to_run"] == 0
    assert run_manifest(manifest, opts(retry_failed=True, workers=1))["failed"] == 1


def test_compatible_jobs_share_a_batch(project):
    manifest = write_manifest(project, styles="[styles/a.png, styles/b.png]",
                              extra="grid: {style_weight: [10, 100]}\n")
    summary = run_manifest(manifest, opts(workers=1, batch_size=4))
    assert summary["done"] == 8
    m, jobs = prepare(manifest)
    rows = [json.loads((m.output / j.sidecar).read_text()) for j in jobs]
    # Both photos have the same shape, so the one worker ran them four at a time.
    assert sorted(r["batch_size"] for r in rows) == [4] * 8
    assert all(r["status"] == "done" and r["steps"] == 4 for r in rows)

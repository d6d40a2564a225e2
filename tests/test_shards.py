"""`--shard I/N` (a Slurm array's view of a manifest): each job runs in exactly one shard, chosen
by its id alone, shards write sidecars but no index, and `reindex` merges them all."""
from __future__ import annotations

import json

from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest, shard_jobs
from pipeline.cli import main
from pipeline.run.index import INDEX_NAME, ResultsIndex


@pytest.fixture
def manifest(tmp_path) -> Path:
    (tmp_path / "photos").mkdir()
    for i in range(2):
        make_content(tmp_path / "photos" / f"p{i}.png", seed=i)
    make_style(tmp_path / "a.png")
    path = tmp_path / "grid.yaml"
    path.write_text("""version: 1
output: out
content: [photos/]
style: [a.png]
params: {size: 32, steps: 2}
grid: {seed: [0, 1, 2]}
devices: cpu
""")
    return path


def sidecars(out: Path) -> dict[str, bytes]:
    # Keyed by the job id each sidecar records (names carry the varying parameters, run/naming.py).
    return {json.loads(p.read_bytes())["job_id"]: p.read_bytes() for p in out.rglob("*.json")}


def test_shard_split_is_stable_and_complete(manifest):
    _, jobs = prepare(manifest)
    for n in (1, 2, 3, 4, 5, 7):
        parts = [shard_jobs(jobs, i, n) for i in range(n)]
        assert sorted(j.job_id for part in parts for j in part) == sorted(j.job_id for j in jobs)
        assert all(int(j.job_id, 16) % n == i for i, part in enumerate(parts) for j in part)
        # Each array task expands the manifest again: the same split, in the manifest's order.
        assert [[j.job_id for j in prepare(manifest, (i, n))[1]] for i in range(n)] == \
               [[j.job_id for j in part] for part in parts]


@pytest.mark.slow
def test_three_shards_run_every_job_once_and_reindex_merges_them(manifest, capsys):
    m, jobs = prepare(manifest)
    seen: dict[str, bytes] = {}
    for i in range(3):
        summary = run_manifest(manifest, RunOptions(live=False, workers=1), shard=(i, 3))
        shard_ids = {j.job_id for j in shard_jobs(jobs, i, 3)}
        assert summary["jobs"] == summary["done"] == len(shard_ids) and summary["failed"] == 0
        now = sidecars(m.output)
        # This shard added exactly its own jobs and rewrote none of the others'.
        assert set(now) - set(seen) == shard_ids
        assert {k: now[k] for k in seen} == seen
        seen = now
        assert not (m.output / INDEX_NAME).exists(), "a shard must not open the index"
    assert set(seen) == {j.job_id for j in jobs} and len(jobs) == 6

    capsys.readouterr()
    main(["reindex", str(m.output)])
    assert capsys.readouterr().out == f"{m.output / INDEX_NAME}: 6 job(s) indexed\n"
    with ResultsIndex(m.output) as index:
        rows = index.rows()
    assert sorted(r["job_id"] for r in rows) == sorted(j.job_id for j in jobs)
    assert {r["status"] for r in rows} == {"done"} and {r["attempts"] for r in rows} == {1}
    assert sorted(r["params"]["seed"] for r in rows) == [0, 0, 1, 1, 2, 2]
    # A plain run afterwards finds everything done: shards and the full run agree on outputs.
    assert run_manifest(manifest, RunOptions(live=False))["to_run"] == 0


@pytest.mark.parametrize("summary, code", [({"failed": 1}, 1), ({"interrupted": True}, 130)])
def test_run_exit_code_reaches_the_shell(manifest, monkeypatch, summary, code):
    # An array scheduler reads it: --dependency=afterok only follows shards that exited 0.
    import pipeline.run.orchestrate

    base = {"output": "out", "jobs": 1, "skipped_done": 0, "kept_failed": 0, "done": 0, "failed": 0}
    monkeypatch.setattr(pipeline.run.orchestrate, "run_manifest", lambda *a, **k: {**base, **summary})
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(manifest), "--shard", "0/3"])
    assert exit_info.value.code == code

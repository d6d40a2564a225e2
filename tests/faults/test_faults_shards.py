"""Shards that never move: a job's shard depends on its id alone.

Array tasks of one manifest start minutes or hours apart; an input added or edited in between
must not move other jobs to other shards (some would run twice at once, some not at all), and
a shard's start-up sweep of temp files must never delete one another shard is writing.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from conftest import make_content, make_style
from faultkit import pinned
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest, shard_jobs


def _project(root: Path, contents: int) -> Path:
    (root / "photos").mkdir(exist_ok=True)
    for i in range(contents):
        make_content(root / "photos" / f"p{i}.png", seed=i)
    make_style(root / "s.png")
    manifest = root / "m.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: photos/\nstyle: s.png\n"
                        "params: {size: 32, steps: 1}\ngrid: {seed: [0, 1]}\ndevices: cpu\n")
    return manifest


def _shard_of(manifest: Path, count: int) -> dict[str, int]:
    _, jobs = prepare(manifest)
    return {j.job_id: i for i in range(count) for j in shard_jobs(jobs, i, count)}


@pytest.mark.parametrize("count", [2, 3, 4, 8])
def test_adding_or_removing_an_input_moves_no_other_job_to_another_shard(tmp_path, count):
    manifest = _project(tmp_path, contents=6)
    before = _shard_of(manifest, count)
    make_content(tmp_path / "photos" / "new.png", seed=99)       # added between two array tasks
    added = _shard_of(manifest, count)
    assert len(added) == len(before) + 2
    assert {job_id: added[job_id] for job_id in before} == before
    (tmp_path / "photos" / "p0.png").unlink()                      # and one taken away
    removed = _shard_of(manifest, count)
    assert len(removed) == len(added) - 2 and removed == {k: added[k] for k in removed}


@pytest.mark.slow
def test_a_shards_start_up_sweep_never_deletes_another_shards_temp_files(tmp_path):
    manifest = _project(tmp_path, contents=4)
    _, jobs = prepare(manifest)
    out = tmp_path / "out"
    # Shard 1 started first and is writing every one of its jobs: a temp file beside each.
    others = [j for j in jobs if j not in shard_jobs(jobs, 0, 2)]
    writing = []
    for job in others:
        folder = (out / job.output).parent
        folder.mkdir(parents=True, exist_ok=True)
        writing.append(folder / f".{Path(job.output).name}.k2x9q1.tmp")
        writing[-1].write_bytes(b"half an image")
    assert writing
    make_content(tmp_path / "photos" / "late.png", seed=42)       # then an input is added
    with pinned():
        summary = run_manifest(manifest, RunOptions(live=False), shard=(0, 2))   # shard 0 starts
    assert summary["failed"] == 0 and summary["done"] == summary["to_run"] > 0
    assert [p for p in writing if not p.exists()] == [], "shard 0 deleted shard 1's temp files"

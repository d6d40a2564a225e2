"""`--executor ray` on a real local Ray instance (CPU actors): same jobs, outputs and losses as
the local executor, and its options. The failure rules run on both executors in
test_executor_contract.py."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.run.orchestrate import RunOptions, prepare, run_manifest
from pipeline.cli import main
from pipeline.run.index import ResultsIndex

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_instance():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, logging_level="warning", log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture
def project(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "styles").mkdir()
    for i in range(2):
        make_content(tmp_path / "photos" / f"p{i}.png", seed=i)
    make_style(tmp_path / "styles" / "a.png", seed=1)
    return tmp_path


def write_manifest(root: Path, name: str, workers: int = 2) -> Path:
    path = root / name
    path.write_text(f"""version: 1
output: out-{path.stem}
content: [photos/]
style: [styles/a.png]
params: {{size: 32, steps: 4}}
devices: cpu
workers_per_device: {workers}
""")
    return path


def rows(out: Path) -> dict[str, dict]:
    with ResultsIndex(out) as index:
        return {r["job_id"]: r for r in index.rows()}


def files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.suffix in (".png", ".json")}


def test_ray_executor_matches_the_local_one(project, ray_instance):
    # One worker each: the VGG is loaded once per executor, and the actor serves both jobs.
    local_m, ray_m = write_manifest(project, "local.yaml", 1), write_manifest(project, "ray.yaml", 1)
    local = run_manifest(local_m, RunOptions(live=False))
    remote = run_manifest(ray_m, RunOptions(live=False, executor="ray"))
    assert local["done"] == remote["done"] == 2 and remote["failed"] == 0
    assert remote["workers"] == ["cpu"] and remote["retried"] == 0
    m_local, jobs = prepare(local_m)
    m_ray, _ = prepare(ray_m)
    by_local, by_ray = rows(m_local.output), rows(m_ray.output)
    assert set(by_ray) == set(by_local) == {j.job_id for j in jobs}
    image_files = {f for f in files(m_local.output) if "/" in f}   # not the gallery thumbnails
    assert image_files and {f for f in files(m_ray.output) if "/" in f} == image_files
    for job in jobs:
        row = by_ray[job.job_id]
        assert row["status"] == "done" and row["attempts"] == 1 and row["device"] == "cpu"
        # The record names the user's files, not the actor's scratch copies.
        assert row["content"] == job.content and row["styles"] == [{"path": job.styles[0].path, "weight": 1.0}]
        assert row["loss_total"] == pytest.approx(by_local[job.job_id]["loss_total"], rel=1e-3)
        assert (row["width"], row["height"]) == (32, 27)
        sidecar = json.loads((m_ray.output / job.sidecar).read_text())
        assert sidecar["job_id"] == job.job_id and sidecar["status"] == "done" and sidecar["attempts"] == 1
    # Resume works the same: nothing left to run, and Ray is not even needed to say so.
    again = run_manifest(ray_m, RunOptions(live=False, executor="ray"))
    assert again["to_run"] == 0 and again["skipped_done"] == 2


def test_missing_ray_says_how_to_install_it(project, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray -> ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(write_manifest(project, "noray.yaml")), "--executor", "ray"])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err == "error: --executor ray needs Ray: pip install 'nst-batch[ray]'\n"


@pytest.mark.parametrize("argv, message", [
    (["--executor", "dask"], "--executor must be local or ray, got 'dask'"),
    (["--address", "auto"], "--address needs --executor ray"),
])
def test_executor_options_are_checked(project, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(write_manifest(project, "opts.yaml")), *argv])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err

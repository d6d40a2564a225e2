"""`plan`'s estimated run time: the work arithmetic, the calibration cache (hit, miss, corrupt),
the printed line, and one real tiny calibration on CPU (no timing asserted)."""
from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import make_content, make_style
from pipeline.run import calibrate
from pipeline.run.orchestrate import plan_manifest, prepare
from pipeline.views.report import time_line

ROOT = Path(__file__).resolve().parents[1]


def grid(tmp_path: Path, sizes=(32, 64), steps: int = 10, workers: int = 2, seeds=(0,)) -> Path:
    """Square 64 px content, one stage per job: job i costs steps × size_i² pixel-evaluations."""
    make_content(tmp_path / "photo.png", size=(64, 64))
    make_style(tmp_path / "wave.png")
    manifest = tmp_path / "grid.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        f"params: {{steps: {steps}, multiscale: 1}}\n"
                        f"grid: {{size: [{', '.join(map(str, sizes))}], seed: {list(seeds)}}}\n"
                        f"devices: cpu\nworkers_per_device: {workers}\n")
    return manifest


class FakeMeasure:
    def __init__(self, throughput: float = 1000.0):
        self.calls, self.throughput = [], throughput

    def __call__(self, key, job, device):
        self.calls.append((key, device))
        return self.throughput


def test_work_and_estimate_arithmetic(tmp_path):
    _, jobs = prepare(grid(tmp_path, sizes=(32, 64), steps=10))
    assert calibrate.work_of(jobs) == 10 * 32 * 32 + 10 * 64 * 64
    assert calibrate.largest_job(jobs).params.size == 64
    key = calibrate.key_for_run("cpu", jobs, threads=1)
    assert (key.height, key.width, key.batch, key.precision) == (64, 64, 1, "fp32")
    found = calibrate.Calibration(key, throughput=512.0, evaluations=3, measured_at=0.0)
    row = calibrate.estimate(jobs, found, workers=2)
    assert row["seconds"] == pytest.approx((10 * 32 * 32 + 10 * 64 * 64) / (512.0 * 2))
    assert row["side"] == 64 and row["batch"] == 1


def test_gpu_batch_is_the_jobs_of_the_largest_shape_at_most_8(tmp_path):
    _, jobs = prepare(grid(tmp_path, sizes=(32, 64), seeds=(0, 1, 2)))
    assert calibrate.batch_for("cpu", jobs, calibrate.largest_job(jobs)) == 1
    assert calibrate.batch_for("cuda", jobs, calibrate.largest_job(jobs)) == 3
    _, many = prepare(grid(tmp_path, sizes=(64,), seeds=range(10)))
    assert calibrate.batch_for("cuda", many, calibrate.largest_job(many)) == 8


def test_cache_miss_measures_and_writes_then_hits(tmp_path):
    _, jobs = prepare(grid(tmp_path))
    root, fake = tmp_path / "cal", FakeMeasure(2048.0)
    assert calibrate.calibration_for("cpu", jobs, root, calibrate=False, measure_fn=fake) is None
    assert fake.calls == [] and not root.exists()          # no --calibrate: nothing measured
    first = calibrate.calibration_for("cpu", jobs, root, calibrate=True, measure_fn=fake, clock=lambda: 1e9)
    assert first.throughput == 2048.0 and len(fake.calls) == 1
    (entry,) = root.iterdir()
    assert json.loads(entry.read_text())["throughput"] == 2048.0
    again = calibrate.calibration_for("cpu", jobs, root, calibrate=True, measure_fn=fake)
    assert again == first and len(fake.calls) == 1       # a hit: not measured again
    # Another size is another entry.
    (tmp_path / "other").mkdir()
    _, bigger = prepare(grid(tmp_path / "other", sizes=(96,)))
    calibrate.calibration_for("cpu", bigger, root, calibrate=True, measure_fn=fake)
    assert len(fake.calls) == 2 and len(list(root.iterdir())) == 2


@pytest.mark.parametrize("text", ["{not json", '{"version": 1}', "", '{"version": 1, "key": {}, "throughput": 1}'])
def test_corrupt_entry_warns_once_and_recalibrates(tmp_path, caplog, text):
    _, jobs = prepare(grid(tmp_path))
    root, fake = tmp_path / "cal", FakeMeasure(777.0)
    key = calibrate.key_for_run("cpu", jobs)
    root.mkdir()
    (root / key.filename()).write_text(text)
    with caplog.at_level(logging.WARNING):
        found = calibrate.calibration_for("cpu", jobs, root, calibrate=True, measure_fn=fake)
    assert found.throughput == 777.0 and len(fake.calls) == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and key.filename() in warnings[0] and "measuring again" in warnings[0]
    assert json.loads((root / key.filename()).read_text())["throughput"] == 777.0   # repaired


def test_nonpositive_measurement_is_not_cached(tmp_path):
    _, jobs = prepare(grid(tmp_path))
    root = tmp_path / "cal"
    assert calibrate.calibration_for("cpu", jobs, root, True, measure_fn=FakeMeasure(float("nan"))) is None
    assert not root.exists()


def test_plan_prints_the_estimate_with_its_method(tmp_path, monkeypatch):
    manifest = grid(tmp_path, sizes=(32, 64), steps=10, workers=2)
    monkeypatch.setattr(calibrate, "measure", FakeMeasure(1024.0))
    assert plan_manifest(manifest)["time"]["seconds"] is None
    row = plan_manifest(manifest, calibrate=True)["time"]
    assert row["workers"] == 2 and row["seconds"] == pytest.approx((10 * 32 * 32 + 10 * 64 * 64) / 2048.0)
    line = time_line(row)
    assert line.startswith("estimated run time 25s on 2 cpu workers")
    assert "calibrated: 3 evaluations of a 64 px batch of 1 on cpu" in line and "1.02e+03 px-evals/s" in line
    assert "not calibrated" in time_line({"seconds": None, "device": "cpu", "workers": 2})


def test_plan_shows_a_cached_figure_without_torch(tmp_path):
    """`plan` stays a fast command: a cached figure is read and printed without importing torch."""
    manifest = grid(tmp_path, sizes=(64,), steps=10, workers=1)
    _, jobs = prepare(manifest)
    slots_threads = max(1, len(os.sched_getaffinity(0)))
    key = calibrate.key_for_run("cpu", jobs, threads=slots_threads)
    calibrate.write_cached(calibrate.default_calibration_dir(),
                           calibrate.Calibration(key, 4096.0, 3, 1.7e9))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "pipeline.cli", "plan", str(manifest)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "estimated run time 10s on 1 cpu worker (" in proc.stdout
    imported = {line.rsplit("|", 1)[1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:") and "|" in line}
    assert not [m for m in imported if m.split(".")[0] == "torch"]


def test_a_real_tiny_calibration_on_cpu(tmp_path):
    _, jobs = prepare(grid(tmp_path, sizes=(32,), steps=10))
    root = tmp_path / "cal"
    found = calibrate.calibration_for("cpu", jobs, root, calibrate=True, threads=1)
    assert found is not None and math.isfinite(found.throughput) and found.throughput > 0
    assert (found.key.height, found.key.width) == (32, 32)
    assert calibrate.read_cached(root, found.key) == found

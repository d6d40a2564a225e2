"""A job's failure stays the job's, inside one worker: bad style targets, out of memory at every
device step (batch, footprint, moving inputs), and memory freed outside the `except` block."""
from __future__ import annotations

import sys

import pytest
import torch

from conftest import make_content, make_style
from pipeline import fault_hooks
from pipeline.engine.optimize import JobInput, Result, stylize_batch
from pipeline.errors import DeviceError, InputError
from pipeline.params import Params
from pipeline.run import worker as worker_module
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import make_job
from pipeline.run.worker import JobRunner

CPU = torch.device("cpu")


def test_one_jobs_failing_targets_fail_that_job_only(feats):
    params = Params(size=32, steps=3)
    content = torch.rand(1, 3, 27, 32)
    grams = {name: torch.eye(feats_channels, dtype=torch.float32).unsqueeze(0) * 0.01
             for name, feats_channels in (("conv1_1", 64), ("conv2_1", 128), ("conv3_1", 256),
                                          ("conv4_1", 512), ("conv5_1", 512))}

    def bad(long_side: int):
        raise InputError("truncated or corrupt image: /styles/cut.png (image file is truncated)")

    out = stylize_batch(feats, [JobInput(content, lambda side: grams, params),
                                JobInput(content, bad, params)])
    assert isinstance(out[0], Result) and out[0].steps == 3
    assert isinstance(out[1], InputError) and str(out[1]).startswith("truncated or corrupt image")


@pytest.fixture
def two_jobs(tmp_path):
    content = make_content(tmp_path / "c.png")
    styles = [make_style(tmp_path / f"s{i}.png", seed=i + 1) for i in range(2)]
    params = Params(size=32, steps=3)
    return [make_job(content, [(s, 1.0)], params) for s in styles]


def run_group(runner: JobRunner, jobs, root) -> dict:
    records = {}

    def emit(event):
        if event[0] == "record":
            assert event[1] not in records, "two records for one job"
            records[event[1]] = event[2]

    runner.run_group(jobs, root, emit)
    return records


def test_out_of_memory_halves_the_batch_frees_memory_outside_the_except_and_fails_alone_at_one(
        tmp_path, two_jobs, monkeypatch):
    freed = []
    # Memory is freed with no exception being handled: a live traceback would keep the batch alive.
    monkeypatch.setattr(worker_module, "free_device_memory", lambda device: freed.append(sys.exc_info()[0]))
    monkeypatch.setenv(fault_hooks.OOM_ABOVE, "0")          # even one job does not fit
    runner = JobRunner(CPU, StyleTargetCache(tmp_path / "cache"), batch_size=2)
    records = run_group(runner, two_jobs, tmp_path / "out")
    assert freed == [None, None, None]                      # after the batch of 2, then after each of 1
    assert runner.batch_size == 1
    assert {r.status for r in records.values()} == {"failed"}
    assert {r.error for r in records.values()} == {
        "CUDA out of memory at size 32 on cpu; lower size or run fewer workers per device"}

    monkeypatch.setenv(fault_hooks.OOM_ABOVE, "1")          # one at a time fits
    records = run_group(JobRunner(CPU, StyleTargetCache(tmp_path / "cache"), batch_size=2), two_jobs,
                        tmp_path / "out")
    assert {(r.status, r.batch_size) for r in records.values()} == {("done", 1)}


class _Flaky:
    """An input tensor whose first `fails` moves to the device run out of memory."""

    def __init__(self, fails: int):
        self.fails = fails

    def to(self, device):
        if self.fails:
            self.fails -= 1
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")
        return torch.zeros(1)


def test_out_of_memory_moving_inputs_frees_and_tries_once_more(tmp_path, monkeypatch):
    freed = []
    monkeypatch.setattr(worker_module, "free_device_memory", lambda device: freed.append(sys.exc_info()[0]))
    runner = JobRunner(CPU, StyleTargetCache(tmp_path / "cache"))
    assert runner._to_device(_Flaky(1)).shape == (1,) and freed == [None]
    with pytest.raises(DeviceError, match="out of memory moving an input image on cpu; run fewer workers per device"):
        runner._to_device(_Flaky(2))


def test_out_of_memory_measuring_the_footprint_means_one_job_per_batch(tmp_path, monkeypatch):
    def oom(*args):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (test)")

    freed = []
    monkeypatch.setattr(worker_module, "measure_footprint", oom)
    monkeypatch.setattr(worker_module, "free_device_memory", lambda device: freed.append(sys.exc_info()[0]))
    runner = JobRunner(CPU, StyleTargetCache(tmp_path / "cache"))
    assert runner._footprint(None, Params(), 32, 32) is None and freed == [None]

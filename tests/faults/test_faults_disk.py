"""A full disk while a job writes its output: a clear error, nothing half-written.

NST_BATCH_FAULT_ENOSPC makes atomic writes to matching paths fail part-way with ENOSPC, as a
full disk does. In a batch the job fails alone and the batch goes on
(test_faults_bad_inputs.py: full.png); here the worker's side, file by file.
"""
from __future__ import annotations

import pytest
import torch

from pipeline.run.orchestrate import classify
from pipeline.run.cache import StyleTargetCache
from pipeline.errors import OutputError
from pipeline.fault_hooks import ENOSPC as FAULT_ENOSPC
from pipeline.run.jobs import make_job
from pipeline.params import params_from_mapping
from pipeline.run.worker import JobRunner


@pytest.mark.parametrize("full_at", ["image", "sidecar"])
def test_disk_full_fails_the_job_with_one_line_and_leaves_nothing_half_written(tmp_path, monkeypatch,
                                                                               content_path, style_path, full_at):
    job = make_job(content_path, [(style_path, 1.0)], params_from_mapping({"size": 32, "steps": 2}))
    out = tmp_path / "out"
    failing = out / (job.output if full_at == "image" else job.sidecar)
    monkeypatch.setenv(FAULT_ENOSPC, str(failing))
    with pytest.raises(OutputError) as err:
        JobRunner(torch.device("cpu"), StyleTargetCache(enabled=False)).run(job, out / job.output, out / job.sidecar)
    assert str(err.value) == f"cannot write {failing}: No space left on device"
    files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    # The image is complete when only the sidecar failed: without its sidecar it is unfinished,
    # so the next run does the job again.
    assert files == ([] if full_at == "image" else [job.output])
    assert [j.job_id for j in classify([job], out).pending] == [job.job_id]

"""The body of one Ray actor: a JobRunner on one device, fed input bytes, returning image bytes.

The Ray counterpart of worker_process.py. Nodes need no shared storage for inputs or outputs:
the parent sends each input file once per run as a Ray object, the actor writes it into a
node-local scratch folder named by its sha256 (so a style used by many jobs is written once
per actor), runs the job there, and returns the image bytes and the record for the parent to
write into the output folder. Ray is imported by the caller only; nothing here needs it at
import time except `ray.get` inside `run`.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..run.jobs import INIT_KEYWORDS, Job, StyleRef
from .local_process import FAULT_KILL_ONCE

SCRATCH_ROOT = "nst-batch-ray"   # under the node's temp folder: <tmp>/nst-batch-ray/<pid>/


def job_inputs(job: Job) -> list[str]:
    """The input files of a job, in a stable order, each once."""
    paths = [job.content, *(s.path for s in job.styles)]
    if job.params.init not in INIT_KEYWORDS:
        paths.append(job.params.init)
    return list(dict.fromkeys(paths))


def relocate(job: Job, local: dict[str, str]) -> Job:
    """The same job reading its inputs from node-local copies (the id and output are kept)."""
    params = job.params
    if params.init not in INIT_KEYWORDS:
        params = params.replace(init=local[params.init])
    return replace(job, content=local[job.content], params=params,
                   styles=tuple(StyleRef(local[s.path], s.weight) for s in job.styles))


class RayWorker:
    """One device, one JobRunner (the VGG stays loaded across jobs), one scratch folder.

    Created as a threaded Ray actor (max_concurrency=2) so that `progress` answers while
    `run` works; the parent never sends a second `run` before the first returns.
    """

    def __init__(self, device: str, cache_dir: str, threads: int):
        import torch

        from ..run.cache import StyleTargetCache
        from ..run.worker import JobRunner, resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir))
        self.scratch = _make_scratch()
        self.state: tuple[str, int, int, float] | None = None   # job_id, step, total, loss

    def node(self) -> str:
        """The host this actor runs on; answering at all means the actor has started."""
        return socket.gethostname()

    def progress(self) -> tuple[str, int, int, float] | None:
        return self.state

    def run(self, job: Job, inputs: dict[str, tuple[str, Any]], attempt: int) -> tuple[str, dict[str, Any], bytes | None]:
        """("done", record, image bytes) or ("failed", record, None); never raises for a job's fault."""
        import ray

        from ..errors import NSTError
        from ..run.worker import failure_record, iso_time

        started, t0 = time.time(), time.perf_counter()
        local: dict[str, str] = {}
        image_path = self.scratch / f"{job.job_id}{Path(job.output).suffix}"
        fault = os.environ.get(FAULT_KILL_ONCE)

        def progress(p: Any) -> None:
            if fault and p.step >= 2 and not os.path.exists(fault):
                Path(fault).touch()   # test-only: die mid-job once, like worker_process does
                os.kill(os.getpid(), signal.SIGKILL)
            self.state = (job.job_id, p.step, p.total, p.losses["total"])

        try:
            for path, (sha, ref) in inputs.items():
                local[path] = str(self._materialize(path, sha, ref, ray))
            record = self.runner.run(relocate(job, local), image_path, None, progress,
                                     extra={"attempts": attempt})
            return "done", {**record, **job.describe()}, image_path.read_bytes()
        except NSTError as err:
            message = str(err)
        except Exception as err:  # a bug or an unexpected library error: record it, keep serving
            detail = traceback.format_exc(limit=3).strip().splitlines()[-1]
            message = f"{type(err).__name__}: {err}" if str(err) else detail
        finally:
            self.state = None
            image_path.unlink(missing_ok=True)
        # Errors name the file the user knows, not its scratch copy.
        for original, copy in local.items():
            message = message.replace(copy, original)
        record = failure_record(job, message, str(self.runner.device), iso_time(started),
                                time.perf_counter() - t0)
        return "failed", {**record, "attempts": attempt}, None

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _materialize(self, path: str, sha: str, ref: Any, ray: Any) -> Path:
        target = self.scratch / f"{sha}{Path(path).suffix.lower()}"
        if not target.exists():
            from ..imaging import atomic_write_bytes

            atomic_write_bytes(target, ray.get(ref))
        return target


def _make_scratch() -> Path:
    """<tmp>/nst-batch-ray/<pid>/, after removing those of actors that are gone (killed ones)."""
    root = Path(tempfile.gettempdir()) / SCRATCH_ROOT
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    scratch = root / str(os.getpid())
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir()
    return scratch


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True   # another user's process: not ours to clean
    return True

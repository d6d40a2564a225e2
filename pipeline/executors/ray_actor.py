"""The body of one Ray actor: a JobRunner on one device, fed input bytes, returning image bytes.

The Ray counterpart of local_process.py, running the same `JobRunner.run_group`. Nodes need no
shared storage for inputs or outputs: the parent sends each input file once per run as a Ray
object, the actor writes it into its own scratch folder named by its sha256 (so a style used
by many jobs is written once per actor), runs the group there, and hands back each job's
record and image bytes for the parent to write into the output folder.

The scratch folder is private to this actor: `tempfile.mkdtemp` (mode 0700, a fresh name,
never an existing path or symlink) named `nst-batch-<run id>-<pid>-…`. An actor removes its
own at `close`; folders of killed actors of the same run are swept by later actors of that
run on the node and by the parent, only when they are real folders owned by this user.
Ray is imported by the caller only; nothing here needs it at import time.
"""
from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..run.jobs import INIT_KEYWORDS, Job, StyleRef

SCRATCH_PREFIX = "nst-batch-"


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
    """One device, one JobRunner (the VGG stays loaded across groups), one scratch folder.

    Created as a threaded Ray actor (max_concurrency=2) so that `events` answers while
    `run_group` works; the parent never sends a second group before the first returns.
    """

    def __init__(self, device: str, cache_dir: str, threads: int, options: dict[str, Any], run_id: str):
        import torch

        from ..run.cache import StyleTargetCache
        from ..run.worker import JobRunner, resolve_device

        if threads:
            torch.set_num_threads(threads)
        self.runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir), **options)
        sweep_scratch(run_id)
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}{run_id}-{os.getpid()}-"))
        self._events: list[tuple[str, str, Any]] = []
        self._lock = threading.Lock()

    def node(self) -> str:
        """The host this actor runs on; answering at all means the actor has started."""
        return socket.gethostname()

    def events(self) -> list[tuple[str, str, Any]]:
        """The events since the last call: ("record", job_id, (record, image bytes)) for records."""
        with self._lock:
            out, self._events = self._events, []
        return out

    def run_group(self, jobs: list[Job], inputs: dict[str, tuple[str, Any]]) -> None:
        import ray

        from ..errors import InputError
        from ..imaging import atomic_write_bytes
        from ..run.records import failed_record, now_iso, relabel

        originals = {job.job_id: job for job in jobs}
        copies: dict[str, str] = {}
        runnable = []
        for job in jobs:
            try:
                for path in job_inputs(job):
                    if path not in copies:
                        sha, ref = inputs[path]
                        target = self.scratch / f"{sha}{Path(path).suffix.lower()}"
                        if not target.exists():
                            atomic_write_bytes(target, ray.get(ref))
                        copies[path] = str(target)
            except OSError as err:
                error = InputError(f"cannot copy the inputs to {self.scratch}: {err.strerror or err}")
                self._add(("started", job.job_id, None))
                self._add(("record", job.job_id, (failed_record(job, error, str(self.runner.device),
                                                                now_iso(), 0.0), None)))
                continue
            runnable.append(relocate(job, copies))
        renames = {copy: original for original, copy in copies.items()}

        def emit(event: tuple[str, str, Any]) -> None:
            kind, job_id, payload = event
            if kind == "record":
                image = self.scratch / originals[job_id].output
                data = image.read_bytes() if payload.done else None
                image.unlink(missing_ok=True)
                payload = (relabel(payload, originals[job_id], renames), data)
            self._add((kind, job_id, payload))

        self.runner.run_group(runnable, self.scratch, emit)

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)

    def _add(self, event: tuple[str, str, Any]) -> None:
        with self._lock:
            self._events.append(event)


def sweep_scratch(run_id: str, all_of_run: bool = False) -> None:
    """Remove this run's scratch folders whose actor is gone (killed), or with `all_of_run`
    (the run is over) every one: real folders owned by this user only, never a symlink or
    another user's folder."""
    root = Path(tempfile.gettempdir())
    prefix = f"{SCRATCH_PREFIX}{run_id}-"
    try:
        entries = list(os.scandir(root))
    except OSError:
        return
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        pid = entry.name[len(prefix):].split("-", 1)[0]
        try:
            st = os.lstat(entry.path)
        except OSError:
            continue
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or (
                not all_of_run and pid.isdigit() and _alive(int(pid))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True

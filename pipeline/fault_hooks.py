"""Test-only fault hooks: environment variables that make real worker processes fail on cue.

The fault suite (tests/faults, tests/test_executor_contract.py) injects faults into real
processes through these; docs/reliability.md lists them. Unset, each costs one `getenv` at
the place it is checked. They must never be set outside tests. Worker-side hooks run in the
worker's progress callback (`at_progress`), so they fire mid-job with the batch in flight;
the disk hooks run inside `imaging.atomic_write_bytes`.

Imports nothing of ours and no torch at import time (the fast CLI commands import this).
"""
from __future__ import annotations

import errno
import fnmatch
import multiprocessing
import os
import signal
import time
from pathlib import Path
from typing import Any

PREFIX = "NST_BATCH_FAULT_"
# Marker path: the first worker to reach step 2 of any job creates it and dies by SIGKILL (once).
KILL_ONCE = "NST_BATCH_FAULT_KILL_ONCE"
# A job id (or its first characters): a poison job, whose worker dies by SIGKILL at step 2 of
# every attempt.
KILL_JOB = "NST_BATCH_FAULT_KILL_JOB"
# N: a batch of more than N jobs raises CUDA's out-of-memory error at its first progress
# report (on CPU too), as a GPU that cannot hold the batch would.
OOM_ABOVE = "NST_BATCH_FAULT_OOM_ABOVE"
# Folder: at its first progress report each job creates `<folder>/<job_id>.held` and waits
# until `<folder>/<job_id>.release` or `<folder>/release` exists (or its parent is gone), so a
# test signals a run knowing which job runs, however fast the machine; never released, a hang.
HOLD = "NST_BATCH_FAULT_HOLD"
# Marker path: the first worker process to write an output image dies by SIGKILL after the
# temp file is complete, before the rename (once).
KILL_IN_WRITE = "NST_BATCH_FAULT_KILL_IN_WRITE"
# Glob: every atomic write to a matching path fails with ENOSPC after half of its data.
ENOSPC = "NST_BATCH_FAULT_ENOSPC"
# Marker path: the first worker to finish frame 2 (or a later one, not the last) of a clip
# creates it and SIGKILLs its whole process group, the run's parent and every worker, as a
# power cut would (once). Tests start the run in a session of its own.
KILL_RUN_MID_CLIP = "NST_BATCH_FAULT_KILL_RUN_MID_CLIP"

# A job id (or its first characters): saving that job's image raises a ValueError, as an
# image encoder's own error would (not an NSTError).
SAVE_ERROR = "NST_BATCH_FAULT_SAVE_ERROR"
# A job id (or its first characters): the worker drops that job when its optimization ends,
# saving nothing and sending no record, as the worker bug that lost a job whose save raised
# did; the executor must notice at the end of the group.
DROP_RECORD = "NST_BATCH_FAULT_DROP_RECORD"
# A worker slot index N: a sick device. Every batch on worker N (each local worker process,
# restarted or not) raises RuntimeError("CUDA error: an illegal memory access was encountered")
# at its first progress report, as a GPU with a sticky CUDA error does.
SICK_WORKER = "NST_BATCH_FAULT_SICK_WORKER"
ILLEGAL_ACCESS = "CUDA error: an illegal memory access was encountered"


def forwarded_env() -> dict[str, str]:
    """The hooks set in this process, for workers that do not inherit its environment (Ray)."""
    return {k: v for k, v in os.environ.items() if k.startswith(PREFIX)}


_held: set[str] = set()     # jobs this process has held once already


def at_progress(job_id: str, step: int, batch: int) -> None:
    """Called by the worker at every progress report of `job_id`, running in a batch of `batch`."""
    sick = os.environ.get(SICK_WORKER)
    if sick and multiprocessing.current_process().name == f"nst-worker-{sick}":
        raise RuntimeError(ILLEGAL_ACCESS)
    hold = os.environ.get(HOLD)
    if hold and job_id not in _held:
        _held.add(job_id)
        _hold(Path(hold), job_id)
    if step < 2:
        return
    once = os.environ.get(KILL_ONCE)
    if once and not os.path.exists(once):
        Path(once).touch()
        _die()
    poison = os.environ.get(KILL_JOB)
    if poison and job_id.startswith(poison):
        _die()
    above = os.environ.get(OOM_ABOVE)
    if above and batch > int(above):
        import torch

        raise torch.cuda.OutOfMemoryError(f"CUDA out of memory (injected: batch of {batch} > {above})")


def at_save(job_id: str) -> None:
    """Called by the worker before it writes `job_id`'s image."""
    target = os.environ.get(SAVE_ERROR)
    if target and job_id.startswith(target):
        raise ValueError(f"injected encoder failure saving {job_id}")


def drops_record(job_id: str) -> bool:
    """True when the worker must not send `job_id`'s record (DROP_RECORD)."""
    target = os.environ.get(DROP_RECORD)
    return bool(target and job_id.startswith(target))


def after_clip_frame(index: int, count: int) -> None:
    """Called by the worker when frame `index` (0-based) of a clip of `count` frames is saved."""
    marker = os.environ.get(KILL_RUN_MID_CLIP)
    if (marker and 1 <= index < count - 1 and multiprocessing.parent_process() is not None
            and not os.path.exists(marker)):
        Path(marker).touch()
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _hold(folder: Path, job_id: str) -> None:
    (folder / f"{job_id}.held").touch()
    parent = multiprocessing.parent_process()      # None in a Ray actor, which Ray kills
    while not ((folder / f"{job_id}.release").exists() or (folder / "release").exists()):
        if parent is not None and not parent.is_alive():
            return                                 # the worker's next report notices and exits
        time.sleep(0.02)   # polls a file the test writes; the job's outcome does not depend on it


def disk_full(path: Path, fh: Any, data: bytes) -> None:
    """With ENOSPC=<glob> matching `path`: write half of `data`, then fail like a full disk."""
    pattern = os.environ.get(ENOSPC)
    if pattern and fnmatch.fnmatch(str(path), pattern):
        fh.write(data[: len(data) // 2])   # a real full disk fails part-way through
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def kill_before_replace(path: Path) -> None:
    """With KILL_IN_WRITE=<marker>: the first worker process writing an output image (not a
    live thumbnail or an intermediate) dies here, once."""
    marker = os.environ.get(KILL_IN_WRITE)
    preview = any(part == ".thumbs" or part.endswith(".steps") for part in path.parts)
    if (marker and path.suffix in (".png", ".jpg") and not preview and multiprocessing.parent_process() is not None
            and not os.path.exists(marker)):
        Path(marker).touch()
        _die()


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)

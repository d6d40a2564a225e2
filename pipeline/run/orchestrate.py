"""`run`, `plan` and `status` of a manifest: manifest → jobs → executor → index → views.

Resume is the default: a job whose image and `done` sidecar both exist is skipped. Workers
write images; the parent alone writes sidecars (each after its image: the completion marker)
and the index. A lock file keeps two runs out of one output folder.
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterator

from filelock import FileLock, Timeout

from . import memory
from .cache import StyleTargetCache, TargetKey, default_cache_dir, key_for
from ..errors import NSTError, OutputError
from ..imaging import atomic_write_bytes, remove_partial_writes
from .grouping import content_shape
from .index import ResultsIndex, open_for_run
from .jobs import Job, safe_join
from .naming import adopt_earlier_names
from ..engine.weights import weights_id
from ..manifest.expand import expand, resolved_yaml
from ..manifest.schema import Manifest, load_manifest
from ..views.progress import RunDisplay
from ..executors.base import ExecutorOptions, Slot, StopFlags
from ..executors.local import LocalExecutor, plan_slots
from .records import JobRecord, failed_record, write_sidecar

LOCK_NAME = ".nst-batch.lock"


class BusyError(NSTError):
    """Another run holds the output folder."""


@dataclass
class JobState:
    done: list[Job] = field(default_factory=list)
    failed: list[Job] = field(default_factory=list)
    pending: list[Job] = field(default_factory=list)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)


def read_sidecar(output_dir: Path, job: Job) -> dict[str, Any] | None:
    try:
        record = json.loads(safe_join(output_dir, job.sidecar).read_text())
    except (OSError, ValueError, NSTError):   # NSTError: a folder symlinked out of the output
        return None                           # folder; the job then fails with that error
    return record if isinstance(record, dict) and record.get("job_id") == job.job_id else None


def classify(jobs: list[Job], output_dir: Path) -> JobState:
    """Split jobs by what their files say: done (image + done sidecar), failed, or pending."""
    state = JobState()
    for job in jobs:
        record = read_sidecar(output_dir, job)
        if record is None:
            state.pending.append(job)
            continue
        state.records[job.job_id] = record
        if record.get("status") == "done" and safe_join(output_dir, job.output).is_file():
            state.done.append(job)
        elif record.get("status") in ("failed", "timeout"):
            state.failed.append(job)
        else:
            state.pending.append(job)
    return state


def shard_jobs(jobs: list[Job], index: int, count: int) -> list[Job]:
    """Shard `index` of `count`: the jobs whose id, a hex number, is `index` modulo `count`.

    A job's shard depends on its id alone, never on which other jobs exist: an input added or
    edited between two array tasks moves no other job, so no job runs in two shards at once
    (nor in none), and a shard's start-up sweep of temp files touches its own jobs' only.
    Ids are sha256 prefixes, so shards are balanced on average, not exactly.
    """
    return [j for j in jobs if int(j.job_id, 16) % count == index]


def final_paths(output_dir: Path, jobs: list[Job]) -> Iterator[Path]:
    """The image and sidecar path of each job, inside `output_dir` (others are skipped)."""
    for job in jobs:
        for relative in (job.output, job.sidecar):
            try:
                yield safe_join(output_dir, relative)
            except NSTError:
                continue


@dataclass
class RunOptions:
    devices: str | list[str] | None = None
    workers: int | None = None
    force: bool = False
    retry_failed: bool = False
    dry_run: bool = False
    retries: int | None = None
    timeout: float | None = None
    cache_dir: Path | None = None
    now: bool = False
    live: bool | None = None
    executor: str = "local"              # local | ray (docs/cluster.md)
    address: str | None = None           # Ray cluster: auto | host:port | None (start a local one)
    batch_size: int | None = None        # jobs per GPU batch; None: automatic (1 on CPU)
    precision: str = "auto"              # auto (bf16 on CUDA, fp32 on CPU) | fp32 | bf16
    compile: bool = False                # torch.compile the network in each worker
    memory_limit: int | None = None      # bytes per worker for the memory planner (run/memory.py)


class _Listener:
    """Connects the executor's events to the sidecars, the index and the display."""

    def __init__(self, output_dir: Path, index: ResultsIndex, display: RunDisplay):
        self.output_dir, self.index, self.display = output_dir, index, display
        self.slot_of: dict[str, int] = {}

    def job_started(self, slot: Slot, job: Job) -> None:
        self.slot_of[job.job_id] = slot.index
        self.display.job_started(slot, job)

    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None:
        self.display.job_progress(slot, job, step, total, loss)

    def job_recorded(self, job: Job, record: JobRecord) -> None:
        """The sidecar (the completion marker, after the image), then the index row."""
        if not record.done:
            remove_partial_writes(final_paths(self.output_dir, [job]))   # a killed worker's temp files
        try:
            write_sidecar(safe_join(self.output_dir, job.sidecar), record)
        except NSTError as err:
            self.display.message(f"warning: {err}")
            if record.done:   # a whole image without its sidecar is unfinished: the next run redoes it
                record = failed_record(job, err, record.device, record.started_at,
                                       record.seconds).tried(record.attempts)
        self.index.upsert(record.as_dict())
        slot = self.slot_of.pop(job.job_id, None)
        if record.done:
            self.display.job_finished(slot, job, record.as_dict())
        else:
            self.display.job_failed(slot, job, record.status, record.error or record.status)

    def job_retry(self, job: Job, error: str, attempt: int) -> None:
        self.slot_of.pop(job.job_id, None)
        remove_partial_writes(final_paths(self.output_dir, [job]))     # the dead worker's temp files
        self.display.message(f"retry  {job.job_id[:8]}: {error} (attempt {attempt} failed)")

    def message(self, text: str) -> None:
        self.display.message(text)


def prepare(manifest_path: Path, shard: tuple[int, int] | None = None) -> tuple[Manifest, list[Job]]:
    manifest = load_manifest(manifest_path)
    # Results already written under another name (an earlier manifest, the id-only names of
    # nst-batch before 0.9) are found by job id and keep that name: resume never redoes them.
    jobs = adopt_earlier_names(expand(manifest), manifest.output)
    if shard is not None:
        jobs = shard_jobs(jobs, *shard)
    return manifest, jobs


def run_manifest(manifest_path: Path, options: RunOptions, shard: tuple[int, int] | None = None,
                 display: RunDisplay | None = None) -> dict[str, Any]:
    """Run every job of the manifest that is not finished yet; returns a summary."""
    manifest, jobs = prepare(manifest_path, shard)
    try:
        manifest.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:   # a full disk or a read-only mount: one line, not a traceback
        raise OutputError(f"cannot create the output folder {manifest.output}: {err.strerror or err}") from None
    if shard is not None:
        # Shards of one manifest run at the same time by design, on disjoint jobs, index-free.
        return _run_locked(manifest, jobs, options, display, True)
    with hold_output(manifest.output):
        return _run_locked(manifest, jobs, options, display, False)


@contextmanager
def hold_output(out: Path) -> Iterator[None]:
    """Exclusive use of an output folder: a second run (or a reindex) refuses instead of racing."""
    lock = FileLock(str(out / LOCK_NAME), timeout=0)
    try:
        lock.acquire()
    except Timeout:   # before OSError, which it subclasses
        raise BusyError(f"another nst-batch run is using {out} (lock {LOCK_NAME}); wait for it to "
                        "finish or choose another output folder") from None
    except OSError as err:   # a full disk or a read-only folder
        raise OutputError(f"cannot create the lock file {out / LOCK_NAME}: {err.strerror or err}") from None
    try:
        yield
    finally:
        lock.release()


def _run_locked(manifest: Manifest, jobs: list[Job], options: RunOptions,
                display: RunDisplay | None, sharded: bool) -> dict[str, Any]:
    out = manifest.output
    warnings: list[str] = []   # what could not be written besides jobs (a full disk): in the summary
    if not sharded:
        try:
            atomic_write_bytes(out / "manifest.resolved.yaml", resolved_yaml(manifest, jobs).encode())
        except OSError as err:
            warnings.append(f"could not write {out / 'manifest.resolved.yaml'} ({err.strerror or err}); "
                            "it is a record of the run, which goes on without it")
    state = classify(jobs, out)
    if options.force:
        todo = list(jobs)
    else:
        todo = state.pending + (state.failed if options.retry_failed else [])
    if options.executor == "ray":
        clips = [j for j in todo if j.clip is not None]
        if clips:
            # A Ray actor ships one input file and one output image each way; a clip reads a
            # folder or video and writes many frames (docs/video.md): refuse before anything runs.
            raise NSTError(f"{len(clips)} clip job(s) (video/frames entries) cannot run on the Ray executor "
                           "yet: run them with --executor local (the default), or as Slurm shards")
        from ..executors.ray import RayExecutor as Executor, plan_ray_slots

        slots = plan_ray_slots(options.devices or manifest.devices, manifest.workers_per_device,
                               options.workers, options.address, connect=bool(todo))
        where: dict[str, Any] = {"address": options.address}
    else:
        Executor, where = LocalExecutor, {}
        slots = plan_slots(options.devices or manifest.devices, manifest.workers_per_device,
                           options.workers, _cuda_count)
    summary = {"output": str(out), "jobs": len(jobs), "skipped_done": len(jobs) - len(todo) - (
        0 if options.force or options.retry_failed else len(state.failed)),
        "kept_failed": 0 if options.force or options.retry_failed else len(state.failed),
        "to_run": len(todo), "workers": [s.device for s in slots]}
    if options.dry_run:
        return {**summary, "dry_run": True, "todo": [j.job_id for j in todo]}
    # Temp files of writers killed in an earlier run (kill -9, power loss): hidden, never under a
    # final name, and no live process writes them (the lock, or the job's own shard).
    remove_partial_writes(final_paths(out, todo))
    # Shards never open index.sqlite: they run at once, often on NFS, where SQLite's WAL fails.
    with _NoIndex() if sharded else open_for_run(out) as index:
        if not sharded:
            # The sidecars are the truth: bring rows for finished work into the index (a killed
            # parent may have written the sidecar but not the row).
            for job in state.done + state.failed:
                record = state.records[job.job_id]
                row = index.get(job.job_id)
                if row is None or row.get("status") != record.get("status"):
                    index.upsert(record)
        if not todo:
            return {**summary, "done": 0, "failed": 0, "views": [] if sharded else write_views(manifest, jobs=jobs),
                    "warnings": warnings + _index_warning(index)}
        display = display or RunDisplay(len(todo), slots, live=options.live)
        listener = _Listener(out, index if not sharded else _NoIndex(), display)
        flags = StopFlags()
        settings = ExecutorOptions(
            retries=manifest.retries if options.retries is None else options.retries,
            timeout=options.timeout if options.timeout is not None else manifest.timeout,
            cache_dir=options.cache_dir, batch_size=options.batch_size, precision=options.precision,
            compile=options.compile, memory_limit=options.memory_limit or manifest.memory_limit)
        executor = Executor(slots, out, settings, flags, **where)
        with display, _interrupts(flags, options.now, display):
            counts = executor.run(todo, listener)
    interrupted = flags.stop or flags.abort
    return {**summary, **counts, "interrupted": interrupted,
            "views": [] if sharded else write_views(manifest, display, jobs),
            "warnings": warnings + _index_warning(index)}


def _index_warning(index: Any) -> list[str]:
    error = getattr(index, "write_error", None)
    return [error] if error else []


def write_views(manifest: Manifest, display: RunDisplay | None = None, jobs: list[Job] | None = None) -> list[str]:
    """Regenerate index.html, and the contact sheet when the manifest asks for one, of the
    manifest's jobs only (results of earlier manifests in the folder are left out).

    A problem here (say, a sheet layout that needs --where) is reported, never allowed to
    turn a finished batch into an error.
    """
    from ..views.gallery import write_gallery
    from ..views.sheets import make_sheets

    written: list[str] = []
    ids = {j.job_id for j in (expand(manifest) if jobs is None else jobs)}
    try:
        written.append(str(write_gallery(manifest.output, job_ids=ids)))
        if manifest.sheet is not None:
            s = manifest.sheet
            written += [str(p) for p in make_sheets(manifest.output, rows=s.rows, cols=s.cols, thumb=s.thumb,
                                                    job_ids=ids)]
    except (NSTError, OSError, sqlite3.Error) as err:   # OSError, sqlite3.Error: a full disk
        reason = err if isinstance(err, NSTError) else (
            f"could not write the gallery or contact sheet ({getattr(err, 'strerror', None) or err}"
            + (f": {err.filename}" if getattr(err, "filename", None) else "") + ")")
        message = f"warning: {reason}"
        display.message(message) if display else print(message)
    return written


class _NoIndex:
    """Shards write sidecars only; `nst-batch reindex` merges them afterwards."""

    def __enter__(self) -> "_NoIndex":
        return self

    def __exit__(self, *exc: Any) -> None:
        pass

    def upsert(self, record: dict[str, Any]) -> None:
        pass


class _interrupts:
    """First Ctrl-C: stop dispatching (with --now: abort running jobs). Second: abort."""

    def __init__(self, flags: StopFlags, now: bool, display: RunDisplay):
        self.flags, self.now, self.display = flags, now, display

    def __enter__(self) -> "_interrupts":
        self.old = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        signal.signal(signal.SIGINT, self.old)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.flags.stop or self.now:
            self.flags.stop = self.flags.abort = True
            self.display.message("interrupted: stopping running jobs now; rerun the same command to finish")
        else:
            self.flags.stop = True
            self.display.message("interrupted: finishing running jobs, starting no new ones "
                                 "(Ctrl-C again to stop now); rerun the same command to finish")


def _cuda_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan_manifest(manifest_path: Path, cache_dir: Path | None = None) -> dict[str, Any]:
    """What a run would do: jobs by size and status, and which style targets are cached."""
    manifest, jobs = prepare(manifest_path)
    state = classify(jobs, manifest.output)
    status_of = {j.job_id: "done" for j in state.done}
    status_of.update({j.job_id: "failed" for j in state.failed})
    by_size: dict[int, dict[str, int]] = {}
    for job in jobs:
        row = by_size.setdefault(job.params.size, {"done": 0, "failed": 0, "pending": 0})
        row[status_of.get(job.job_id, "pending")] += 1
    cache = StyleTargetCache(cache_dir or default_cache_dir())
    keys: dict[str, bool] = {}
    for job in jobs:
        try:
            job_keys = target_keys(job)
        except NSTError:   # an unreadable input (a broken symlink): its job fails alone, needs no targets
            continue
        for key in job_keys:
            keys.setdefault(key.digest(), cache.path_for(key).exists())
    budget, memory_rows = memory_plan_rows(manifest, jobs)
    return {"manifest": str(manifest.source), "output": str(manifest.output), "jobs": len(jobs),
            "memory_budget": budget, "memory": memory_rows,
            "by_size": dict(sorted(by_size.items())), "targets_total": len(keys),
            "targets_cached": sum(keys.values()), "cache_dir": str(cache.root),
            "to_run": len(state.pending), "failed": len(state.failed), "done": len(state.done)}


def memory_plan_rows(manifest: Manifest, jobs: list[Job]) -> tuple[int | None, list[dict[str, Any]]]:
    """The memory planner's choice for each job, as a worker on the manifest's first device would
    make it now (its budget: memory_limit, else free memory shared among workers_per_device)."""
    devices = manifest.devices
    # `auto` asks torch only where an NVIDIA driver is present: planning a CPU run loads no torch.
    nvidia = os.path.exists("/proc/driver/nvidia/version")
    device = devices[0] if isinstance(devices, tuple) else (
        "cuda:0" if devices == "auto" and nvidia and _cuda_count() else "cpu")
    return memory.plan_rows([(j.params, content_shape(j)) for j in jobs], device,
                            manifest.workers_per_device, manifest.memory_limit)


def target_keys(job: Job) -> list[TargetKey]:
    """The cache keys a job's style targets will use (one per style image and stage).

    Stage sizes come from the content's header shape, as the worker computes them, so `plan`
    counts the same keys a run uses (coarse stages of wide images are raised to fit conv5_1)."""
    wid = weights_id(job.params.weights)
    # A clip's colour-preserving variants are keyed by the clip (run/clips.py): counted as plain here.
    params = job.params if job.clip is None else replace(job.params, preserve_color="none")
    return [key_for(params, ref.path, job.content, side, wid)
            for side in job.params.stage_sizes(content_shape(job)) for ref in job.styles]

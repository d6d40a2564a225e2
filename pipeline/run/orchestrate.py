"""`run`, `plan` and `status` of a manifest: manifest → jobs → executor → index → views.

Resume is the default: a job whose image and `done` sidecar both exist is skipped. Workers
write images; the parent alone writes sidecars (each after its image: the completion marker)
and the index. A lock file keeps two runs out of one output folder (shards share it: output_lock.py).
"""
from __future__ import annotations

import json
import os
import signal
import sqlite3
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from . import budget, calibrate as calibrate_mod
from .cache import StyleTargetCache, TargetKey, default_cache_dir, key_for
from ..errors import NSTError, OutputError
from ..imaging import atomic_write_bytes, remove_partial_writes
from .devices import check_devices
from .grouping import content_shape, job_stages
from .held import job_held_bytes
from .print_size import print_sizes
from .index_repair import open_for_run_repaired
from .jobs import Job, safe_join
from .output_lock import LOCK_NAME, BusyError, hold_output  # noqa: F401 - BusyError, LOCK_NAME: re-exported
from .naming import adopt_earlier_names
from ..engine.weights import weights_id
from ..manifest.expand import expand, resolved_yaml
from ..manifest.schema import Manifest, load_manifest
from ..views.progress import RunDisplay
from .listener import RunListener, final_paths
from .runlog import RunLog
from ..views.live import LIVE_EVERY
from ..executors.base import ExecutorOptions, StopFlags
from ..executors.local import LocalExecutor, plan_slots


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
    live_every: float = LIVE_EVERY       # seconds between rewrites of the live gallery (0: at the end only)
    save_every: int | None = None        # intermediate images every N evaluations; None: the manifest's
    quiet: bool = False                  # no live view or per-job lines: failures and the summary


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
    import logging
    from .region_checks import region_problems   # masks: one warning line each, the run goes on

    for line in (line for lines in region_problems(manifest) for line in lines):
        logging.getLogger(__name__).warning("%s", line)
    # Before the output folder, the lock or any worker: one line naming what was asked.
    check_devices(options.devices or manifest.devices, "--device" if options.devices else f"{manifest.source}: devices",
                  local=options.executor != "ray")   # a Ray cluster's GPUs are counted by plan_ray_slots
    try:
        manifest.output.mkdir(parents=True, exist_ok=True)
    except OSError as err:   # a full disk or a read-only mount: one line, not a traceback
        raise OutputError(f"cannot create the output folder {manifest.output}: {err.strerror or err}") from None
    # Shards of one manifest run at the same time by design, on disjoint jobs, index-free: they
    # share the lock, which keeps a plain run (that would redo their jobs) and reindex out.
    with hold_output(manifest.output, shared=shard is not None):
        return _run_locked(manifest, jobs, options, display, shard is not None)


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
        # What the memory planner would refuse, as `plan` shows it: counted before the night.
        _, rows = memory_plan_rows(manifest, todo, options.memory_limit)
        refused = [row for row in rows if row["mode"] == "refused"]
        return {**summary, "dry_run": True, "todo": [j.job_id for j in todo],
                "refused_jobs": sum(row["jobs"] for row in refused),
                "refused": [f"{row['jobs']} job(s) at {row['size']}: {row['notes']}" for row in refused]}
    # Temp files of writers killed in an earlier run (kill -9, power loss): hidden, never under a
    # final name, and no live process writes them (the lock, or the job's own shard).
    remove_partial_writes(final_paths(out, todo))
    # Shards never open index.sqlite: they run at once, often on NFS, where SQLite's WAL fails.
    # A damaged index (a bad page) is moved aside and rebuilt from the sidecars first.
    opened, repaired = (_NoIndex(), None) if sharded else open_for_run_repaired(out)
    warnings += [repaired] if repaired else []
    with opened as index:
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
        display = display or RunDisplay(len(todo), slots, live=options.live, quiet=options.quiet,
                                        work={j.job_id: job_stages(j) for j in todo})
        log = RunLog(out, warn=display.message)
        log.write("run", f"{len(todo)} job(s) to run of {len(jobs)} ({summary['skipped_done']} done, "
                  f"{summary['kept_failed']} failed kept) on {', '.join(s.device for s in slots)}"
                  + (" (one shard)" if sharded else ""))
        listener = RunListener(out, index if not sharded else _NoIndex(), display, log,
                               live_every=None if sharded or not options.live_every else options.live_every,
                               job_ids={j.job_id for j in jobs})
        flags = StopFlags()
        settings = ExecutorOptions(
            retries=manifest.retries if options.retries is None else options.retries,
            timeout=options.timeout if options.timeout is not None else manifest.timeout,
            cache_dir=options.cache_dir, batch_size=options.batch_size, precision=options.precision,
            compile=options.compile, memory_limit=options.memory_limit or manifest.memory_limit,
            save_every=manifest.save_every if options.save_every is None else options.save_every)
        executor = Executor(slots, out, settings, flags, **where)
        with display, _interrupts(flags, options.now, display):
            counts = executor.run(todo, listener)
    interrupted = flags.stop or flags.abort
    log.write("summary", f"done {counts.get('done', 0)} · failed {counts.get('failed', 0)}"
              + (f" · pending {counts['pending']}" if counts.get("pending") else "")
              + (f" · retired {len(executor.retired_workers)} worker(s)" if executor.retired_workers else "")
              + (" · interrupted" if interrupted else ""))
    said = listener.live.reported if listener.live else set()
    return {**summary, **counts, "interrupted": interrupted, "retired": executor.retired_workers,
            "views": [] if sharded else write_views(manifest, display, jobs, said),
            "warnings": warnings + _index_warning(index)}


def _index_warning(index: Any) -> list[str]:
    error = getattr(index, "write_error", None)
    return [error] if error else []


def write_views(manifest: Manifest, display: RunDisplay | None = None, jobs: list[Job] | None = None,
                said: set[str] = frozenset()) -> list[str]:
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
        if message not in said:   # the live gallery may have said it already, during the run
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


def plan_manifest(manifest_path: Path, cache_dir: Path | None = None, calibrate: bool = False) -> dict[str, Any]:
    """What a run would do: jobs by size and status, which style targets are cached, and the
    estimated run time (from a cached calibration; `calibrate`: measure one when none is)."""
    manifest, jobs = prepare(manifest_path)
    check_devices(manifest.devices, f"{manifest.source}: devices")
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
    memory_budget, memory_rows = memory_plan_rows(manifest, jobs)
    return {"manifest": str(manifest.source), "output": str(manifest.output), "jobs": len(jobs),
            "memory_budget": memory_budget, "memory": memory_rows, "print_sizes": print_sizes(jobs),
            "time": time_plan(manifest, state.pending, calibrate),
            "by_size": dict(sorted(by_size.items())), "targets_total": len(keys),
            "targets_cached": sum(keys.values()), "cache_dir": str(cache.root),
            "to_run": len(state.pending), "failed": len(state.failed), "done": len(state.done)}


def memory_plan_rows(manifest: Manifest, jobs: list[Job],
                     limit: int | None = None) -> tuple[int | None, list[dict[str, Any]]]:
    """The memory planner's choice for each job, as a worker on the manifest's first device would
    make it now (its budget: memory_limit, else free memory shared among workers_per_device)."""
    device = _plan_device(manifest)
    return budget.plan_rows([(j.params, content_shape(j), job_held_bytes(j)) for j in jobs], device,
                            manifest.workers_per_device, limit or manifest.memory_limit)


def _plan_device(manifest: Manifest) -> str:
    """The device a plan is made for: the manifest's first."""
    devices = manifest.devices
    # `auto` asks torch only where an NVIDIA driver is present: planning a CPU run loads no torch.
    nvidia = os.path.exists("/proc/driver/nvidia/version")
    return devices[0] if isinstance(devices, tuple) else (
        "cuda:0" if devices == "auto" and nvidia and _cuda_count() else "cpu")


def time_plan(manifest: Manifest, to_run: list[Job], calibrate: bool) -> dict[str, Any] | None:
    """The estimated run time of the jobs to run on the plan's device kind (run/calibrate.py);
    None when there is nothing to run, or no calibration is cached and `calibrate` is off."""
    if not to_run:
        return None
    kind = "cpu" if _plan_device(manifest) == "cpu" else "cuda"
    count = _cuda_count if kind == "cuda" else (lambda: 0)
    slots = plan_slots(list(manifest.devices) if isinstance(manifest.devices, tuple) else manifest.devices,
                       manifest.workers_per_device, None, count)
    workers = sum(1 for s in slots if (s.device == "cpu") == (kind == "cpu"))
    threads = next((s.threads for s in slots if s.device == "cpu"), 0)
    found = calibrate_mod.calibration_for(kind, to_run, calibrate_mod.default_calibration_dir(), calibrate,
                                          threads)
    if found is None:
        return {"seconds": None, "workers": workers, "device": kind}
    return calibrate_mod.estimate(to_run, found, workers)


def target_keys(job: Job) -> list[TargetKey]:
    """The cache keys a job's style targets will use (one per style image and stage).

    Stage sizes come from the content's header shape, as the worker computes them, so `plan`
    counts the same keys a run uses (coarse stages of wide images are raised to fit conv5_1)."""
    wid = weights_id(job.params.weights)
    # A clip's colour-preserving variants are keyed by the clip (run/clips.py): counted as plain here.
    params = job.params if job.clip is None else replace(job.params, preserve_color="none")
    return [key_for(params, ref.path, job.content, side, wid)
            for side in job.params.stage_sizes(content_shape(job)) for ref in job.styles]

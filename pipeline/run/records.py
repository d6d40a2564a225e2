"""A job's result as one frozen value: the sidecar, the index row and the run display all hold it.

Records are built here only: `done_record` from a finished optimization, `failed_record`
from an error (the worker's, or the executor's for a dead worker or a timeout). Workers build
them with `attempts=0`; the executor, which alone knows how often a job was tried, stamps
`attempts`, the `worker` slot and its physical `device` (`JobRecord.tried`) before anyone
writes or shows the record. `as_dict()` is the sidecar's JSON object and the index row;
`from_dict` reads a sidecar back.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from ..errors import NSTError, OutputError
from .jobs import Job

STATUSES = ("done", "failed", "timeout")
HISTORY_POINTS = 300   # loss-history points a sidecar keeps per job (views/plots.downsample)


@dataclass(frozen=True)
class JobRecord:
    job_id: str
    status: str                              # done | failed | timeout
    content: str
    styles: tuple[tuple[str, float], ...]    # (path, blend weight)
    params: Mapping[str, Any]
    output: str                              # image path relative to the output folder
    device: str                              # physical: cpu | cuda:N as the parent names it (stamped)
    started_at: str                          # ISO 8601, UTC
    finished_at: str
    seconds: float
    attempts: int = 0                        # stamped by the executor
    worker: int | None = None                # the executor's slot that ran it (stamped too)
    steps: int = 0
    width: int | None = None
    height: int | None = None
    loss_total: float | None = None
    loss_content: float | None = None
    loss_style: float | None = None
    loss_tv: float | None = None
    weights_id: str | None = None
    cache_hit: bool = False
    error: str | None = None                 # one line, for failed and timeout
    batch_size: int | None = None            # jobs in the batch it ran in
    precision: str | None = None             # fp32 | bf16
    temporal_error: float | None = None      # clips: flicker measured on the output (docs/video.md)
    clip: Mapping[str, Any] | None = None    # clips: frame count, fps, selection, per-frame records
    memory_plan: Mapping[str, Any] | None = None   # how the memory planner ran it (run/memory.py)
    # step, stage and every loss per evaluation, at most ~300 points (the gallery's curves)
    loss_history: Mapping[str, Any] | None = None
    # Spatial control: per region its name, mask (or label map and colour), styles and weights
    # (docs/regions.md); None for a job without regions.
    regions: tuple[Mapping[str, Any], ...] | None = None
    # The last iterate's losses (its last evaluation; total, content, style, tv): the saved
    # image's (loss_total …) too without `average`, up to bf16 vs fp32 (docs/quality.md).
    loss_iterate: Mapping[str, float] | None = None
    # Scores at a fixed evaluation size, comparable across jobs and settings (docs/quality.md).
    style_distance: float | None = None
    content_distance: float | None = None
    scores: Mapping[str, Any] | None = None   # how they were measured: size, layers, projections
    notes: tuple[str, ...] = ()              # what the worker adapted: a mask resized, a region ignored

    @property
    def done(self) -> bool:
        return self.status == "done"

    def tried(self, attempts: int, worker: int | None = None, device: str | None = None) -> "JobRecord":
        """Stamped by the executor: tries, slot, and the slot's physical device (a worker sees its
        GPU as cuda:0 through CUDA_VISIBLE_DEVICES); None keeps what the record says."""
        return replace(self, attempts=attempts, worker=self.worker if worker is None else worker,
                       device=self.device if device is None else device)

    def as_dict(self) -> dict[str, Any]:
        """The sidecar's JSON object, which is also what the index stores."""
        record = asdict(self)
        record["styles"] = [{"path": p, "weight": w} for p, w in self.styles]
        record["params"] = dict(self.params)
        record["regions"] = [dict(r) for r in self.regions] if self.regions else None
        record["notes"] = list(self.notes)
        return record

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "JobRecord":
        """A record from a sidecar's (or an index row's) mapping; unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in record.items() if k in known}
        values["styles"] = tuple((s["path"], float(s["weight"])) for s in record.get("styles") or ())
        values["params"] = dict(record.get("params") or {})
        values["regions"] = tuple(record["regions"]) if record.get("regions") else None
        values["notes"] = tuple(record.get("notes") or ())
        return cls(**values)


def describe(job: Job) -> dict[str, Any]:
    """The fields of a record that say which job it is (and which inputs it read)."""
    return {"job_id": job.job_id, "content": job.content,
            "styles": tuple((s.path, s.weight) for s in job.styles),
            "params": job.params.to_dict(), "output": job.output, "regions": regions_of(job)}


def regions_of(job: Job) -> tuple[dict[str, Any], ...] | None:
    """A job's regions as the sidecar and the index store them (None without regions)."""
    if not job.regions:
        return None
    return tuple({"name": r.name, "mask": r.mask, "labels": r.labels,
                  "colour": "#%02x%02x%02x" % r.colour if r.colour else None,
                  "styles": [{"path": s.path, "weight": s.weight, "mask": s.mask} for s in r.styles],
                  "style_weight": r.style_weight, "content_weight": r.content_weight} for r in job.regions)


def done_record(job: Job, *, losses: Mapping[str, float], steps: int, width: int, height: int,
                device: str, started_at: str, seconds: float, weights_id: str, cache_hit: bool,
                batch_size: int, precision: str, memory_plan: Mapping[str, Any] | None = None,
                loss_history: Mapping[str, Any] | None = None,
                loss_iterate: Mapping[str, float] | None = None, notes: tuple[str, ...] = ()) -> JobRecord:
    return JobRecord(**describe(job), status="done", device=device, started_at=started_at,
                     finished_at=now_iso(), seconds=round(seconds, 3), steps=steps, width=width,
                     height=height, loss_total=losses.get("total"), loss_content=losses.get("content"),
                     loss_style=losses.get("style"), loss_tv=losses.get("tv"), weights_id=weights_id,
                     cache_hit=cache_hit, batch_size=batch_size, precision=precision, memory_plan=memory_plan,
                     loss_history=loss_history or None, loss_iterate=loss_iterate or None, notes=tuple(notes))


def failed_record(job: Job, error: BaseException | str, device: str, started_at: str, seconds: float,
                  status: str = "failed") -> JobRecord:
    return JobRecord(**describe(job), status=status, device=device, started_at=started_at,
                     finished_at=now_iso(), seconds=round(seconds, 3),
                     error=error_message(error) or status)


def relabel(record: JobRecord, job: Job, renames: Mapping[str, str]) -> JobRecord:
    """The record of a job that ran on copies of its inputs (Ray's scratch folder), told in
    terms of the user's `job`: its paths, and the error naming the user's files."""
    error = record.error
    for copy, original in renames.items():
        error = error.replace(copy, original) if error else error
    return replace(record, **describe(job), error=error)


def error_message(error: BaseException | str) -> str:
    """One line for users: our errors as they are, anything else with its type's name."""
    if isinstance(error, str):
        text = error
    elif isinstance(error, NSTError):
        text = str(error)
    else:
        text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    return text.strip().splitlines()[0] if text.strip() else ""


def write_sidecar(path: Path, record: JobRecord | Mapping[str, Any]) -> None:
    data = record.as_dict() if isinstance(record, JobRecord) else dict(record)
    from ..imaging import atomic_write_bytes   # imaging loads torch; records are read without it

    try:
        atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")

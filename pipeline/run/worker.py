"""Run jobs on one device: the VGG is loaded once per (weights, pooling) and reused across jobs.

`JobRunner.run_batch(tasks)` loads the inputs, gets style targets through the cache, runs
compatible jobs together in one batch through the pure core, and writes each image and then
its JSON sidecar, each atomically, as soon as that job finishes. The sidecar is the completion
marker: an image without one is treated as unfinished.
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from .. import __version__, imaging
from ..engine import losses, pixels
from . import memory
from .cache import StyleTargetCache, key_for
from ..errors import DeviceError, NSTError, OutputError
from ..engine.features import VGGFeatures
from .jobs import Job
from .grouping import batch_key
from ..engine.objective import style_grams
from ..engine.optimize import JobInput, Precision, Progress, stylize_batch

PROGRESS_EVERY = 0.5   # seconds between progress reports (each one reads the losses back)
MAX_BATCH = 32
log = logging.getLogger(__name__)


def _compiled(net: VGGFeatures) -> VGGFeatures:
    """torch.compile the network's forward when this torch can; otherwise say so and go on."""
    try:
        net.forward = torch.compile(net.forward, dynamic=False)   # type: ignore[method-assign]
    except Exception as err:  # compile support varies by platform and torch version
        log.warning("torch.compile is not available here (%s); running uncompiled", err)
    return net


def resolve_device(spec: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device that exists, or a DeviceError saying what to use."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec} was asked for but CUDA is not available here; use --device cpu or auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec} does not exist (this machine has {torch.cuda.device_count()} GPU(s))")
        return torch.device(spec)
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")


def iso_time(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="milliseconds")


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@dataclass
class Task:
    """One job as a worker runs it: where it writes, whom it tells."""
    job: Job
    image_path: Path
    sidecar_path: Path | None = None
    progress: Callable[[Progress], None] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class _Prepared:
    """A task with its inputs loaded and its targets function ready."""

    def __init__(self, task: Task, content: torch.Tensor, init: torch.Tensor | None, targets, hits: list[bool]):
        self.task, self.content, self.init, self.targets, self.hits = task, content, init, targets, hits
        self.started_at, self.t0 = now_iso(), time.perf_counter()


class JobRunner:
    """Holds the networks and the cache of one worker; runs jobs alone or several per batch.

    `batch_size`: None picks it from the device (1 on CPU, where batching gains nothing; on CUDA
    from the free memory and a measured per-image footprint); `precision`: auto | fp32 | bf16.
    """

    def __init__(self, device: torch.device, cache: StyleTargetCache, batch_size: int | None = None,
                 precision: str = "auto", compile: bool = False):
        self.device, self.cache = device, cache
        self.batch_size, self.compile = batch_size, compile
        self.precision = Precision.for_device(device, precision)
        self._nets: dict[tuple[str, str], VGGFeatures] = {}
        self._footprints: dict[Any, int] = {}
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed shapes per batch: autotuning pays off

    def features(self, weights: str, pooling: str) -> VGGFeatures:
        key = (weights, pooling)
        if key not in self._nets:
            net = VGGFeatures(weights=weights, pooling=pooling).to(self.device)
            if self.precision.channels_last:
                net = net.to(memory_format=torch.channels_last)
            if self.compile:
                net = _compiled(net)
            self._nets[key] = net
        return self._nets[key]

    def run(self, job: Job, image_path: Path, sidecar_path: Path | None,
            progress: Callable[[Progress], None] | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one job, write its image and (if asked) its sidecar; returns the record or raises."""
        outcome: list[dict[str, Any] | NSTError] = []
        self.run_batch([Task(job, image_path, sidecar_path, progress, dict(extra or {}))],
                       lambda task, result: outcome.append(result))
        if isinstance(outcome[0], NSTError):
            raise outcome[0]
        return outcome[0]

    def run_batch(self, tasks: list[Task], report: Callable[[Task, dict[str, Any] | NSTError], None],
                  started: Callable[[Task], None] | None = None) -> None:
        """Run tasks, batching the compatible ones; `report(task, record or error)` once per task,
        as soon as that task is finished (a job that finishes early does not wait for its batch)."""
        prepared: list[_Prepared] = []
        for task in tasks:
            try:
                prepared.append(self._prepare(task))
            except NSTError as err:
                report(task, err)
        groups: dict[Any, list[_Prepared]] = {}
        for item in prepared:
            shape = tuple(item.content.shape[-2:])
            groups.setdefault(batch_key(item.task.job, shape), []).append(item)
        for items in groups.values():
            size = self._capacity(items[0])
            for i in range(0, len(items), size):
                self._run_chunk(items[i:i + size], report, started)

    def _prepare(self, task: Task) -> _Prepared:
        job, p = task.job, task.job.params
        feats = self.features(p.weights, p.pooling)
        content = imaging.read_image(job.content, long_side_hint=p.size).to(self.device)
        # A clear refusal naming the size that fits, not an out-of-memory error mid-job.
        memory.check_fits(p, tuple(content.shape[-2:]), self.device, bf16=self.precision.bf16)
        init = None
        if p.init not in ("content", "noise"):
            init = imaging.read_image(p.init, long_side_hint=p.size).to(self.device)
        hits: list[bool] = []
        return _Prepared(task, content, init, self._targets_fn(feats, job, content, hits), hits)

    def _run_chunk(self, items: list[_Prepared], report, started) -> None:
        p = items[0].task.job.params
        feats = self.features(p.weights, p.pooling)
        pending = {id(item): item for item in items}
        for item in items:
            item.started_at, item.t0 = now_iso(), time.perf_counter()
            if started is not None:
                started(item.task)

        def finished(item: _Prepared, result) -> None:
            pending.pop(id(item), None)
            if isinstance(result, NSTError):
                report(item.task, result)
                return
            try:
                report(item.task, self._save(item, result, feats, len(items)))
            except NSTError as err:
                report(item.task, err)

        specs = [JobInput(item.content, item.targets, item.task.job.params, item.init, item.task.progress,
                          finished=lambda result, item=item: finished(item, result)) for item in items]
        try:
            stylize_batch(feats, specs, self.precision, progress_every=PROGRESS_EVERY)
        except torch.cuda.OutOfMemoryError:
            left = list(pending.values())
            del specs
            if self.device.type == "cuda":
                torch.cuda.empty_cache()
            if len(left) == 1:
                item = left[0]
                report(item.task, DeviceError(
                    f"CUDA out of memory at size {item.task.job.params.size} on {self.device}; lower "
                    "size or run fewer workers per device"))
                return
            # Halve the batch and retry its unfinished jobs from the start, rather than failing them.
            self.batch_size = max(1, len(left) // 2)
            half = len(left) // 2
            for part in (left[:half], left[half:]):
                self._run_chunk(part, report, started)

    def _save(self, item: _Prepared, result, feats: VGGFeatures, batch: int) -> dict[str, Any]:
        job, p = item.task.job, item.task.job.params
        meta = {"job_id": job.job_id, "params": p.to_dict(), "nst_batch": __version__}
        imaging.save_image(result.image, item.task.image_path, p.format, p.quality, meta)
        record = {
            **job.describe(),
            "status": "done",
            "loss_total": result.losses.get("total"),
            "loss_content": result.losses.get("content"),
            "loss_style": result.losses.get("style"),
            "loss_tv": result.losses.get("tv"),
            "steps": result.steps,
            "seconds": round(time.perf_counter() - item.t0, 3),
            "device": str(self.device),
            "cache_hit": all(item.hits) if item.hits else False,
            "weights_id": feats.weights_id,
            "error": None,
            "started_at": item.started_at,
            "finished_at": now_iso(),
            "width": int(result.image.shape[-1]),
            "height": int(result.image.shape[-2]),
            "batch_size": batch,
            "precision": "bf16" if self.precision.bf16 else "fp32",
            **item.task.extra,
        }
        if item.task.sidecar_path is not None:
            write_sidecar(item.task.sidecar_path, record)
        return record

    def _capacity(self, item: _Prepared) -> int:
        """How many jobs like this one run together: the override, 1 on CPU, else what fits."""
        if self.batch_size is not None:
            return self.batch_size
        if self.device.type != "cuda":
            return 1
        p = item.task.job.params
        h, w = pixels.scaled_size(*item.content.shape[-2:], p.size)
        key = (h, w, p.optimizer, p.content_layers, p.style_layers)
        if key not in self._footprints:
            self._footprints[key] = self._measure_footprint(item, h, w)
        free = memory.free_bytes(self.device) or 0
        return max(1, min(MAX_BATCH, int(0.85 * free // self._footprints[key])))

    def _measure_footprint(self, item: _Prepared, h: int, w: int) -> int:
        """Peak bytes of one image's forward and backward at the final size, plus its optimizer state."""
        p = item.task.job.params
        feats = self.features(p.weights, p.pooling)
        torch.cuda.synchronize(self.device)
        base = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        x = torch.rand(1, 3, h, w, device=self.device, requires_grad=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.precision.bf16):
            acts = feats(x, [*p.content_layers, *p.style_layers])
            sum(a.float().pow(2).mean() for a in acts.values()).backward()
        peak = torch.cuda.max_memory_allocated(self.device) - base
        del x, acts
        history = 2 * 100 * 3 * h * w * 4 if p.optimizer == "lbfgs" else 2 * 3 * h * w * 4
        return int(peak + history + 4 * 3 * h * w * 4)

    def _targets_fn(self, feats: VGGFeatures, job: Job, content: torch.Tensor, hits: list[bool]):
        p = job.params
        loaded: dict[str, torch.Tensor] = {}

        def style_image(path: str) -> torch.Tensor:
            # Loaded only on a cache miss, and once per job whatever the number of stages.
            if path not in loaded:
                raw = imaging.read_image(path).to(self.device)
                loaded[path] = pixels.style_variant(raw, content, p.preserve_color)
            return loaded[path]

        def targets(long_side: int) -> dict[str, torch.Tensor]:
            grams = []
            for ref in job.styles:
                key = key_for(p, ref.path, job.content, long_side, feats.weights_id)
                g, hit = self.cache.get_or_compute(
                    key, lambda ref=ref, side=key.long_side: style_grams(
                        feats, pixels.resize_long_side(style_image(ref.path), side),
                        p.style_layers))
                hits.append(hit)
                grams.append({k: v.to(self.device) for k, v in g.items()})
            return losses.blend_grams(grams, [s.weight for s in job.styles])

        return targets


def write_sidecar(path: Path, record: dict[str, Any]) -> None:
    try:
        imaging.atomic_write_bytes(path, json.dumps(record, indent=2, sort_keys=True).encode())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def failure_record(job: Job, error: BaseException | str, device: str, started: str, seconds: float,
                   status: str = "failed") -> dict[str, Any]:
    message = error if isinstance(error, str) else (
        str(error) if isinstance(error, NSTError) else f"{type(error).__name__}: {error}")
    return {**job.describe(), "status": status, "loss_total": None, "loss_content": None,
            "loss_style": None, "loss_tv": None, "steps": 0, "seconds": round(seconds, 3),
            "device": device, "cache_hit": False, "weights_id": None, "error": message.splitlines()[0] if message else status,
            "started_at": started, "finished_at": now_iso(), "width": None, "height": None}

"""Run jobs on one device: a group of jobs in, one record per job out.

`JobRunner.run_group(jobs, root, emit)` is all an executor's worker calls. The VGG is loaded
once per (weights, pooling) and kept across groups; compatible jobs run together in one
batch through the pure core; each job's image is written (atomically) under `root` as soon
as that job finishes, and `emit` receives, per job, ("started", job_id, None) when its work
begins, ("progress", job_id, (step, total, loss)) while it runs, and exactly one
("record", job_id, JobRecord) at the end. The executor writes the sidecar, the completion
marker, once it has stamped the attempts.

Failures stay with their job: an unreadable image, a bad style, a diverged loss or an
out-of-memory error at batch size 1 make a failed record for that job only. Out of memory in
a larger batch frees the device (outside the `except` block, so no traceback keeps the
failed batch's tensors alive) and runs the unfinished jobs again in two halves.
"""
from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Hashable

import torch

from .. import fault_hooks, imaging
from ..engine import pixels
from ..engine.features import VGGFeatures
from ..engine.optimize import JobInput, Precision, Progress, stylize_batch
from ..errors import DeviceError, NSTError, OutputError
from . import budget as budgets, memory
from .devices import resolve_device
from .cache import StyleTargetCache
from .footprint import MAX_BATCH, fitting, free_device_memory, measure_footprint
from .heap import bound_heap
from .held import job_held_bytes
from .grouping import batch_key
from .jobs import Job, safe_join
from .records import JobRecord, error_message, failed_record, now_iso, write_sidecar
from .job_output import save_result, snapshots_for
from .job_scores import scored
from .regions import job_inputs
from .targets import StyleSource, photo_keys

PROGRESS_EVERY = 0.5   # seconds between progress reports (each one reads the losses back)
Event = tuple[str, str, Any]          # (kind, job_id, payload)
Emit = Callable[[Event], None]
log = logging.getLogger(__name__)
__all__ = ["JobRunner", "Event", "MAX_BATCH", "resolve_device", "safe_join"]


def _compiled(net: VGGFeatures) -> VGGFeatures:
    """torch.compile the network's forward when this torch can; otherwise say so and go on."""
    try:
        net.forward = torch.compile(net.forward, dynamic=False)   # type: ignore[method-assign]
    except Exception as err:  # compile support varies by platform and torch version
        log.warning("torch.compile is not available here (%s); running uncompiled", err)
    return net


class _Item:
    """One job inside a group: where its image goes and, once prepared, its device inputs."""

    def __init__(self, job: Job, image_path: Path | None, root: Path | None = None):
        self.job, self.image_path = job, image_path
        self.root = root                 # the output folder (None: `stylize`, no live gallery)
        self.content: torch.Tensor | None = None
        self.init: torch.Tensor | None = None
        self.targets: Any = None
        self.maps: tuple = (None, None)  # regions: content weight map, photo map (run/regions.py)
        self.notes: list[str] = []       # what was adapted (a mask resized, a region ignored): the record's
        self.hits: list[bool] = []
        self.plan: memory.MemoryPlan | None = None
        self.inputs = 0                  # bytes its decoded inputs hold (run/held.py)
        self.started_at, self.t0 = now_iso(), time.perf_counter()


class JobRunner:
    """Holds the networks and the cache of one worker; runs groups of jobs, batched.

    `batch_size`: None picks it from the device (1 on CPU, where batching gains nothing; on CUDA
    from the free memory and a measured per-image footprint); `precision`: auto | fp32 | bf16.
    `memory_limit` (bytes): what this worker may use (on CPU the whole process; on CUDA the
    process's allocations, capped there); None: the device's free memory shared among the
    `sharing` workers on it. The budget is fixed once, before the first job (run/budget.py).
    """

    def __init__(self, device: torch.device, cache: StyleTargetCache, batch_size: int | None = None,
                 precision: str = "auto", compile: bool = False, memory_limit: int | None = None,
                 sharing: int = 1, save_every: int = 0):
        self.device, self.cache = device, cache
        self.save_every = save_every     # intermediate images every N evaluations (0: none)
        self.memory_limit, self.sharing = memory_limit, sharing
        self.batch_size, self.compile = batch_size, compile
        self.precision = Precision.for_device(device, precision)
        self._nets: dict[tuple[str, str], VGGFeatures] = {}
        self._footprints: dict[Hashable, int] = {}
        self._budget: budgets.WorkerBudget | None = None
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = True   # fixed shapes per batch: autotuning pays off
            budgets.cap_cuda_process(memory_limit, device)
        elif memory_limit is not None:
            bound_heap()        # a limit to respect: freed large blocks go back (run/heap.py)

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

    @property
    def budget(self) -> budgets.WorkerBudget:
        """What every job and batch of this worker plans for: fixed at the first call, which
        comes once a network is loaded, so that what the worker holds then can be counted."""
        if self._budget is None:
            held = budgets.measured_held(self.device) if self.memory_limit is not None else 0
            self._budget = budgets.worker_budget(self.memory_limit, str(self.device), self.sharing, held)
            if held > memory.worker_base(str(self.device)):
                log.warning("this worker holds %.2f GB before any job, more than the %.2f GB `plan` assumes: "
                            "its plans may differ from `plan`'s", held / 1e9, memory.worker_base(str(self.device)) / 1e9)
        return self._budget

    # --- the interface executors use -----------------------------------------------------

    def run_group(self, jobs: list[Job], root: Path, emit: Emit) -> None:
        """Run `jobs`, writing images under `root`; exactly one record per job through `emit`."""
        items, reported = [], set()

        def tell(event: Event) -> None:
            if event[0] == "record":
                reported.add(event[1])
            emit(event)

        for job in jobs:
            try:   # a bad output path fails its own job, not its batch-mates
                items.append(_Item(job, safe_join(root, job.output), root))
            except NSTError as err:
                tell(("started", job.job_id, None))
                tell(("record", job.job_id, self._failed(_Item(job, None), err)))
        try:
            self._run_items(items, tell)
        except Exception as err:  # a bug or an unexpected library error: record it, keep serving
            for item in items:
                if item.job.job_id not in reported:
                    tell(("record", item.job.job_id, self._failed(item, err)))

    def run(self, job: Job, image_path: Path, sidecar_path: Path | None = None,
            progress: Callable[[Progress], None] | None = None) -> dict[str, Any]:
        """Run one job, write its image (and, if asked, its sidecar); the record, or raise."""
        outcome: list[JobRecord] = []
        error: list[BaseException] = []

        def emit(event: Event) -> None:
            kind, _, payload = event
            if kind == "record":
                outcome.append(payload)
            elif kind == "progress" and progress is not None:
                progress(payload)

        self._run_items([_Item(job, Path(image_path))], emit, raw_progress=True, errors=error)
        if error:
            raise error[0]
        record = outcome[0].tried(1)
        if sidecar_path is not None:
            write_sidecar(sidecar_path, record)
        return record.as_dict()

    # --- groups, chunks, halves ------------------------------------------------------------

    def _run_items(self, items: list[_Item], emit: Emit, raw_progress: bool = False,
                   errors: list[BaseException] | None = None) -> None:
        clips = [item for item in items if item.job.clip is not None]
        if clips:   # chains of frames, batched across clip jobs: run/clips.py
            from .clips import run_clips

            run_clips(self, [(item.job, item.image_path) for item in clips], emit, PROGRESS_EVERY, raw_progress)
            items = [item for item in items if item.job.clip is None]
        by_key: dict[Hashable, list[_Item]] = {}
        for item in items:
            by_key.setdefault(batch_key(item.job, imaging.image_shape(item.job.content)), []).append(item)
        for group in by_key.values():
            p = group[0].job.params
            try:
                # Loaded before any job's clock starts: a timeout counts the job, not the start-up.
                feats = self._oom_retried(lambda: self.features(p.weights, p.pooling), "loading the network")
            except NSTError as err:
                for item in group:
                    emit(("started", item.job.job_id, None))
                    self._report_error(item, err, emit, errors)
                continue
            size = self._capacity(group[0], feats)
            chunks: deque[list[_Item]] = deque(group[i:i + size] for i in range(0, len(group), size))
            while chunks:
                ready = [i for i in chunks.popleft() if self._prepared(i, feats, emit, errors)]
                # Grouped again by the decoded shapes: a JPEG decoded at a reduced scale can round
                # to another size than its header suggests.
                batches: dict[Hashable, list[_Item]] = {}
                for item in ready:
                    batches.setdefault(batch_key(item.job, tuple(item.content.shape[-2:])), []).append(item)
                # A job the planner had to tile or trim (its plan has notes) runs alone; the
                # others run in batches whose footprint together fits the budget.
                runs = [[i] for b in batches.values() for i in b if i.plan.notes]
                for b in batches.values():
                    runs += self._batched([i for i in b if not i.plan.notes])
                for batch in runs:
                    left = self._run_chunk(batch, feats, emit, raw_progress, errors)
                    if left:
                        chunks.extendleft(self._halves(left, emit, errors))

    def _halves(self, left: list[_Item], emit: Emit, errors) -> list[list[_Item]]:
        """After out of memory: free it, then the unfinished jobs in two halves (one fails alone)."""
        free_device_memory(self.device)    # here, not in the except: see the module docstring
        if len(left) == 1:
            self._report_error(left[0], DeviceError(
                f"CUDA out of memory at size {left[0].job.params.size} on {self.device}; lower "
                "size or run fewer workers per device"), emit, errors)
            return []
        # Run them again from the start rather than failing them; the smaller size sticks.
        half = len(left) // 2
        self.batch_size = half
        return [left[half:], left[:half]]

    def _prepared(self, item: _Item, feats: VGGFeatures, emit: Emit, errors) -> bool:
        """Load a job's inputs onto the device (once); False when the job failed doing so."""
        if item.content is not None:
            return True
        emit(("started", item.job.job_id, None))
        item.started_at, item.t0 = now_iso(), time.perf_counter()
        job, p = item.job, item.job.params
        try:
            content = self._to_device(imaging.read_image(job.content, long_side_hint=p.size))
            # Whole or tiled, and the optimizer state, within the budget; or a clear refusal
            # naming the size that fits, not an out-of-memory error mid-job.
            # The style (and init) images the job holds, decoded reduced, and its content image:
            # outside the estimate, so off the worker's fixed budget (run/held.py; `plan` does the same).
            item.inputs = inputs = job_held_bytes(job)
            budget = None if self.budget.bytes is None else max(0, self.budget.bytes - inputs)
            held = self.budget.held + (inputs if self.memory_limit is not None else 0)   # named in a refusal
            item.plan = memory.plan_job(p, tuple(content.shape[-2:]), budget, bf16=self.precision.bf16, held=held)
            if item.plan.notes and self.device.type == "cpu":
                bound_heap()    # tiled or trimmed to fit: keep the resident set near what is alive
            if p.init not in ("content", "noise"):
                item.init = self._to_device(imaging.read_image(p.init, long_side_hint=p.size))
            source = StyleSource(feats, p, content, self.cache, photo_keys(feats, p, job.content), item.hits,
                                 tile=item.plan.style_tile)
            item.targets, item.maps, item.notes = job_inputs(job, content, source)   # masks read once
        except NSTError as err:
            self._report_error(item, err, emit, errors)
            return False
        item.content = content
        return True

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        return self._oom_retried(lambda: tensor.to(self.device), "moving an input image")

    def _oom_retried(self, action: Callable[[], Any], what: str) -> Any:
        """action(); on out of memory, free what a failed batch left and try once more."""
        for attempt in range(2):
            try:
                return action()
            except torch.cuda.OutOfMemoryError:
                if attempt:
                    raise DeviceError(f"out of memory {what} on {self.device}; run fewer workers "
                                      "per device") from None
            free_device_memory(self.device)     # outside the except: see the module docstring
        raise AssertionError("unreachable")

    def _run_chunk(self, chunk: list[_Item], feats: VGGFeatures, emit: Emit, raw_progress: bool,
                   errors) -> list[_Item]:
        """Run one batch; [] when every job is recorded, else (out of memory) the unfinished ones."""
        pending = {id(item): item for item in chunk}
        for item in chunk:
            item.started_at, item.t0 = now_iso(), time.perf_counter()

        def finished(item: _Item, result: Any) -> None:
            pending.pop(id(item), None)
            if fault_hooks.drops_record(item.job.job_id):   # test-only: a job lost without a record
                return
            if isinstance(result, NSTError):
                self._report_error(item, result, emit, errors)
                return
            try:
                record = scored(self._save(item, result, feats, len(chunk)), item.job, item.image_path, feats, self.device)
            except NSTError as err:
                self._report_error(item, err, emit, errors)
                return
            except Exception as err:  # an encoder's ValueError, a MemoryError: this job fails, not
                # its batch (the job is off `pending` already, so the batch's handler would skip it)
                self._report_error(item, OutputError(f"saving {item.image_path} failed: {error_message(err)}"),
                                   emit, errors)
                return
            emit(("record", item.job.job_id, record))

        def progress_of(item: _Item) -> Callable[[Progress], None]:
            def progress(p: Progress) -> None:
                emit(("progress", item.job.job_id, p if raw_progress else (p.step, p.total, p.losses["total"])))
                fault_hooks.at_progress(item.job.job_id, p.step, len(chunk))   # test-only
            return progress

        specs = [JobInput(item.content, item.targets, _planned_params(item), item.init, progress_of(item),
                          finished=lambda result, item=item: finished(item, result),
                          tiles=item.plan.tiles, lbfgs_history=item.plan.history or 1,
                          snapshot=snapshots_for(item.job, item.image_path, item.root, self.save_every),
                          content_weight_map=item.maps[0], photo_map=item.maps[1])
                 for item in chunk]
        try:
            stylize_batch(feats, specs, self.precision, progress_every=PROGRESS_EVERY)
        except torch.cuda.OutOfMemoryError:
            return list(pending.values())   # the caller frees memory once this frame is gone
        except Exception as err:  # this batch's problem (a bug, a library error): its jobs only
            if errors is not None and not isinstance(err, NSTError):
                raise                           # `run` (nst-batch stylize): the caller reports it
            for item in list(pending.values()):
                self._report_error(item, err, emit, errors)
        return []

    # --- records -----------------------------------------------------------------------------

    def _save(self, item: _Item, result: Any, feats: VGGFeatures, batch: int) -> JobRecord:
        return save_result(item.job, item.image_path, result, started_at=item.started_at, t0=item.t0,
                           device=str(self.device), weights_id=feats.weights_id,
                           cache_hit=all(item.hits) if item.hits else False, batch=batch,
                           precision="bf16" if self.precision.bf16 else "fp32", plan=item.plan,
                           notes=tuple(item.notes))

    def _failed(self, item: _Item, error: BaseException) -> JobRecord:
        return failed_record(item.job, error, str(self.device), item.started_at, time.perf_counter() - item.t0)

    def _report_error(self, item: _Item, error: BaseException, emit: Emit, errors) -> None:
        if errors is not None:       # `run`: the caller raises the error itself
            errors.append(error)
        emit(("record", item.job.job_id, self._failed(item, error)))

    def _capacity(self, item: _Item, feats: VGGFeatures) -> int:
        """How many jobs like this one run together: at most the override (auto: 1 on CPU, up
        to MAX_BATCH on CUDA), and only as many as fit in this worker's budget together."""
        if self.batch_size is None and self.device.type != "cuda":
            return 1
        p = item.job.params
        shape = imaging.image_shape(item.job.content) or (p.size, p.size)
        size = budgets.batch_capacity(p, shape, self.budget.bytes, self.precision.bf16, self.batch_size or MAX_BATCH)
        if self.batch_size is not None:
            return size
        h, w = pixels.scaled_size(*shape, p.size)
        key = (h, w, p.optimizer, tuple(p.content_layers), tuple(p.style_layers))
        if key not in self._footprints:
            footprint = self._footprint(feats, p, h, w)
            if footprint is None:
                return 1
            self._footprints[key] = footprint
        # The measured footprint, against this worker's share, not the whole device's free memory.
        return fitting(self._footprints[key], self.device, size, budget=self.budget.bytes)

    def _batched(self, items: list[_Item]) -> list[list[_Item]]:
        """`items` (whole, untrimmed, of one decoded shape) in batches that fit the budget, each
        job's plan made the plan of its batch (its peak is the batch's)."""
        if not items:
            return []
        p, shape = items[0].job.params, tuple(items[0].content.shape[-2:])
        total, inputs = self.budget.bytes, max(i.inputs for i in items)
        size = budgets.batch_size_within(p, shape, total, inputs, self.precision.bf16, len(items))
        runs = [items[i:i + size] for i in range(0, len(items), size)]
        for run in runs:
            for item in run:
                plan = budgets.batch_plan(item.plan, item.job.params, shape, len(run), self.precision.bf16)
                item.plan = plan if len(run) == 1 else replace(plan, budget=budgets.room_for(total, len(run), inputs))
        return runs

    def _footprint(self, feats: VGGFeatures, p: Any, h: int, w: int) -> int | None:
        """The measured footprint, or None when measuring one image already runs out of memory."""
        try:
            return measure_footprint(feats, p, h, w, self.device, self.precision)
        except torch.cuda.OutOfMemoryError:
            pass
        free_device_memory(self.device)
        return None


def _planned_params(item: _Item) -> Any:
    """The job's parameters as the engine runs them: Adam (its default lr) when the planner
    moved the job to it; everything else, and the job's id and record, stay the job's."""
    p = item.job.params
    return p if item.plan is None or item.plan.optimizer == p.optimizer else p.replace(optimizer="adam", lr=None)

"""Clip jobs on one device: chains of frames that advance together, one frame per job per batch.

A clip job (a `Job` with a `clip`) is sent to a worker like any group of jobs; the worker
(`JobRunner.run_group`) hands the clip jobs of a group to `run_clips`, which reports through
the same events: ("started", ...), ("progress", ...) and one ("record", job_id, JobRecord). Each round stylizes the next unfinished frame
of every clip job of the group in one batch, so many clips × styles keep a GPU as full as
photos do. Temporal coherence follows Ruder, Dosovitskiy & Brox (2016): frame t starts from
frame t−1's result warped by the optical flow (unreliable pixels from the content frame) and
adds `temporal_weight` × the masked squared difference to that warped result.

Files, inside `<output>/<clip>/<style>/<job_id>/`: `frame_000001.png …` written atomically as
each frame finishes, `frames.json` (the finished frames' records, rewritten atomically after
each: the resume point), then `<job_id>.mp4`; the executor then writes the sidecar
`<job_id>.json`, the completion marker, from the record. A killed run resumes at the first frame not in `frames.json`; the previous
frame is read back from its PNG, and the chain always continues from the saved 8-bit frame,
so a resumed clip is the same as one run straight through.
"""
from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import torch

from .. import __version__, fault_hooks, imaging, video
from ..engine import flow
from ..engine.optimize import JobInput, Progress, stylize_batch
from ..errors import DeviceError, NSTError
from . import memory
from .footprint import free_device_memory
from .cache import key_for
from .clip_store import FrameSpool
from .flow_cache import FlowCache, flow_key
from .grouping import batch_key
from .job_scores import scored
from .jobs import Job, clip_sha256
from .records import HISTORY_POINTS, JobRecord, done_record, failed_record, now_iso
from .regions import ClipRegions
from .targets import StyleSource
from ..views.plots import downsample

if TYPE_CHECKING:   # the worker calls run_clips; importing it back would be a cycle
    from .worker import Emit, JobRunner

FRAMES_LOG = "frames.json"


def frame_name(index: int) -> str:
    """File name of frame `index` (0-based) of a clip's output: frame_000001.png is the first."""
    return f"frame_{index + 1:06d}.png"


class _Clip:
    """One clip job inside a worker: its frames, flows, targets and finished frames."""

    def __init__(self, runner: JobRunner, job: Job, image_path: Path, emit: Emit):
        p = job.params
        self.job, self.params, self.image_path, self.emit = job, p, image_path, emit
        self.device = runner.device
        self.started_at, self.t0 = now_iso(), time.perf_counter()
        # Frames spooled to disk and flows streamed through their cache file: a clip job holds
        # the frame it is on, the previous result and one pair of flows, however long the clip.
        frames, self.fps = video.iter_frames(job.clip, p.size)     # long side ≤ size already
        self.frames = FrameSpool(frames, p.size)
        self.count, self.shape = self.frames.count, self.frames.shape
        memory.check_fits(p, self.shape, self.device, bf16=runner.precision.bf16, limit=runner.memory_limit,
                          sharing=runner.sharing)
        self.content = self.frame(0)       # for the worker's batch-size measurement
        self.hits: list[bool] = []
        source = _source(runner, job, self.content, self.hits)
        self.targets = lambda long_side: source.blended(job.styles, long_side)
        # Regions: one mask for every frame, or a folder of one per frame (run/regions.py);
        # checked here, before the flows are computed.
        self.regions = ClipRegions(job, self.content, source, self.count) if job.regions else None
        self.folder = image_path.parent
        digest = flow_key(clip_sha256(job.clip), job.clip.selection(), self.shape, self.count)
        self.flows, self.flow_hit = FlowCache(runner.cache.root / "flows", runner.cache.enabled).get_or_compute(
            digest, (self.count - 1, 2, *self.shape), self._pair_flows)
        self._motion: tuple[int, torch.Tensor, torch.Tensor] | None = None   # frame t's, once read
        self.init = None
        if p.init not in ("content", "noise"):
            self.init = imaging.read_image(p.init, long_side_hint=p.size).to(self.device)
        self.records: list[dict[str, Any]] = []
        self.histories: list[tuple[int, dict]] = []   # (frame, its loss history) run by this worker
        self.previous: torch.Tensor | None = None   # the last finished frame as saved (8-bit values)
        self.raw_progress = False                   # progress events carry Progress values (`run`)
        self._resume()

    def frame(self, index: int) -> torch.Tensor:
        """Content frame `index` as (1, 3, H, W) float in [0, 1] on the device."""
        return self.frames.frame(index).to(self.device).float().div(255)

    def _pair_flows(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """flow(frame k → k+1) and flow(k+1 → k), computed once per clip (uint8 frames, CPU)."""
        a, b = self.frames.frame(k), self.frames.frame(k + 1)
        return flow.dis_flow(a, b), flow.dis_flow(b, a)

    def motion(self, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Backward flow (1, 2, H, W) and reliability mask (1, 1, H, W) of frame t ≥ 1, on the device;
        read from the flow file when frame t needs them, not held for the whole clip."""
        if self._motion is None or self._motion[0] != t:
            forward, backward = self.flows.pair(t - 1)
            backward = backward.to(self.device).float()
            self._motion = (t, backward, flow.reliability(forward.to(self.device).float(), backward))
        return self._motion[1], self._motion[2]

    def close(self) -> None:
        """Give back the spooled frames and the open flow file (a failed or finished clip)."""
        self.frames.close()
        self.flows.close()
        self._motion = None

    @property
    def next(self) -> int:
        return len(self.records)

    @property
    def done(self) -> bool:
        return len(self.records) == self.count

    def _resume(self) -> None:
        """Take over the frames an earlier (killed) attempt finished: listed and on disk."""
        # Temp files of writes killed before their rename (hidden `.<name>.<random>.tmp`): the
        # job's folder is its own and no other process writes it while this worker holds the job.
        for stale in self.folder.glob(".*.tmp"):
            try:
                stale.unlink()
            except OSError:
                pass
        try:
            log = json.loads((self.folder / FRAMES_LOG).read_text())
        except (OSError, ValueError):
            return
        if not isinstance(log, dict) or log.get("job_id") != self.job.job_id:
            return
        for index, record in enumerate(log.get("frames", [])[:self.count]):
            path = self.folder / frame_name(index)
            if not isinstance(record, dict) or record.get("frame") != index + 1:
                break
            try:
                image = imaging.read_image(path)
            except NSTError:
                break
            if tuple(image.shape[-2:]) != self.shape:
                break
            self.records.append(record)
            self.previous = image.to(self.device)

    def spec(self, progress: Callable[[Progress], None] | None) -> JobInput:
        """The next frame as one job of a batch."""
        t, p = self.next, self.params
        content = self.frame(t)
        targets, (weights, photo) = self.regions.at(t, content) if self.regions else (self.targets, (None, None))
        if t == 0 or p.temporal_weight == 0:
            return JobInput(content, targets, p, self.init, progress, content_weight_map=weights, photo_map=photo)
        backward, mask = self.motion(t)
        start = flow.warm_start(self.previous, content, backward, mask)
        return JobInput(content, targets, p, start, progress, temporal=(flow.warp(self.previous, backward), mask),
                        content_weight_map=weights, photo_map=photo)

    def finish_frame(self, result, seconds: float) -> None:
        """Save the frame, measure its temporal error, record it (frames.json), move on."""
        t = self.next
        image = result.image.detach().float().clamp(0, 1).mul(255).round().div(255)   # as saved
        meta = {"job_id": self.job.job_id, "frame": t + 1, "params": self.params.to_dict(), "nst_batch": __version__}
        imaging.save_image(image, self.folder / frame_name(t), "png", metadata=meta)
        error = None
        if t > 0:
            error = float(flow.temporal_error(image, self.previous, *self.motion(t))[0])
        self.records.append({
            "frame": t + 1, "file": frame_name(t), "loss_total": result.losses.get("total"),
            "loss_content": result.losses.get("content"), "loss_style": result.losses.get("style"),
            "loss_tv": result.losses.get("tv"), "loss_temporal": result.losses.get("temporal"),
            "steps": result.steps, "seconds": round(seconds, 3), "temporal_error": error})
        _write_json(self.folder / FRAMES_LOG, {"job_id": self.job.job_id, "frames": self.records})
        self.histories.append((t + 1, result.loss_history))
        self.previous = image
        fault_hooks.after_clip_frame(t, self.count)   # test-only

    def finish(self, runner: JobRunner, weights_id: str, batch: int) -> JobRecord:
        """All frames done: the mp4, then the record (the executor writes it as the sidecar)."""
        # Read back from the saved frames one at a time (the exact 8-bit values), not kept.
        video.write_mp4((_saved(self.folder / frame_name(i)) for i in range(self.count)), self.image_path, self.fps)
        middle = (self.folder / frame_name(self.count // 2), self.frame(self.count // 2))   # what is scored
        self.close()
        errors = [r["temporal_error"] for r in self.records if r["temporal_error"] is not None]

        def mean(key: str) -> float | None:
            values = [r[key] for r in self.records if r.get(key) is not None]
            return sum(values) / len(values) if values else None

        record = done_record(
            self.job, losses={k: mean(f"loss_{k}") for k in ("total", "content", "style", "tv")},
            steps=sum(r["steps"] for r in self.records), width=int(self.shape[1]), height=int(self.shape[0]),
            device=str(runner.device), started_at=self.started_at,
            seconds=sum(r["seconds"] for r in self.records), weights_id=weights_id,
            cache_hit=all(self.hits) if self.hits else False, batch_size=batch,
            precision="bf16" if runner.precision.bf16 else "fp32",
            loss_history=downsample(_chained(self.histories), HISTORY_POINTS),
            notes=tuple(self.regions.notes) if self.regions else ())
        # Loss means over the frames; `seconds` sums the frames' (an interrupted clip's too).
        clip = {"frame_count": self.count, "fps": self.fps, "loss_temporal": mean("loss_temporal"),
                "flow_cache_hit": self.flow_hit, "selection": self.job.clip.selection(), "frames": self.records}
        record = scored(record, self.job, middle[0], runner.features(self.params.weights, self.params.pooling),
                        runner.device, content=middle[1])
        return replace(record, temporal_error=sum(errors) / len(errors) if errors else None, clip=clip)

    def failed(self, error: BaseException) -> JobRecord:
        self.close()
        return failed_record(self.job, error, str(self.device), self.started_at, time.perf_counter() - self.t0)


def run_clips(runner: JobRunner, jobs: list[tuple[Job, Path]], emit: Emit, progress_every: float,
              raw_progress: bool = False) -> None:
    """Run clip jobs (each with its mp4 path): those of one frame shape and network settings
    advance in one batch. Emits, per job, ("started", ...) before its frames are read,
    ("progress", ...) at most every `progress_every` seconds, and exactly one ("record", ...)."""
    clips: list[_Clip] = []
    for job, image_path in jobs:
        emit(("started", job.job_id, None))   # decoding and flow count as the job's time
        started_at, t0 = now_iso(), time.perf_counter()
        try:
            clip = _Clip(runner, job, image_path, emit)
        except Exception as err:  # this clip's input or a library error on it: this job fails alone
            emit(("record", job.job_id, failed_record(job, err, str(runner.device), started_at,
                                                      time.perf_counter() - t0)))
            continue
        clip.raw_progress = raw_progress
        clips.append(clip)
    groups: dict[Any, list[_Clip]] = {}
    for clip in clips:
        groups.setdefault(batch_key(clip.job, clip.shape), []).append(clip)
    for members in groups.values():
        size = runner.batch_size or (1 if runner.device.type != "cuda" else _capacity(runner, members[0]))
        for i in range(0, len(members), size):
            chunk = members[i:i + size]
            _advance(runner, chunk, len(chunk), progress_every)


def _capacity(runner: JobRunner, clip: _Clip) -> int:
    """Clips per batch on a GPU: what fits by the worker's measured footprint of one frame."""
    from .footprint import fitting, measure_footprint

    p = clip.params
    h, w = clip.shape
    try:
        footprint = measure_footprint(runner.features(p.weights, p.pooling), p, h, w, runner.device,
                                      runner.precision)
    except torch.cuda.OutOfMemoryError:
        footprint = None
    if footprint is None:
        free_device_memory(runner.device)   # outside the except: its traceback holds the tensors
        return 1
    # A clip job holds its warped previous frame and mask beside a photo job's state.
    return fitting(footprint + 5 * h * w * 4, runner.device, budget=runner.budget.bytes)   # the worker's share


def _advance(runner: JobRunner, clips: list[_Clip], batch: int, progress_every: float) -> None:
    """Frame by frame until every clip is done or failed; halve the batch on out-of-memory."""
    p = clips[0].params
    feats = runner.features(p.weights, p.pooling)
    active = [c for c in clips if not _finished_early(runner, c, feats, batch)]
    while active:
        specs = [c.spec(_progress(c, len(active))) for c in active]
        t0 = time.perf_counter()
        try:
            results = stylize_batch(feats, specs, runner.precision, progress_every=progress_every)
        except torch.cuda.OutOfMemoryError:
            results = None          # handled below, outside the except: its traceback holds the batch
        del specs
        if results is None:
            free_device_memory(runner.device)
            if len(active) == 1:
                _record(active[0], active[0].failed(DeviceError(
                    f"CUDA out of memory at size {p.size} on {runner.device}; lower size or run fewer workers per device")))
                return
            # Each clip goes on from its next frame: nothing finished is lost or redone.
            half = len(active) // 2
            runner.batch_size = max(1, half)
            _advance(runner, active[:half], batch, progress_every)
            _advance(runner, active[half:], batch, progress_every)
            return
        seconds = time.perf_counter() - t0
        still = []
        for clip, result in zip(active, results):
            try:
                if isinstance(result, NSTError):
                    raise result
                clip.finish_frame(result, seconds)
                if clip.done:
                    _record(clip, clip.finish(runner, feats.weights_id, batch))
                else:
                    still.append(clip)
            except NSTError as err:   # a diverged frame, a full disk: this clip fails, the others go on
                _record(clip, clip.failed(err))
        active = still


def _record(clip: _Clip, record: JobRecord) -> None:
    clip.emit(("record", clip.job.job_id, record))


def _finished_early(runner: JobRunner, clip: _Clip, feats, batch: int) -> bool:
    """A resumed clip whose frames were all done (killed before its mp4): finish it now."""
    if not clip.done:
        return False
    try:
        _record(clip, clip.finish(runner, feats.weights_id, batch))
    except NSTError as err:
        _record(clip, clip.failed(err))
    return True


def _progress(clip: _Clip, batch: int) -> Callable[[Progress], None]:
    """Per-frame progress as progress through the whole clip (steps of all its frames)."""
    done = sum(r["steps"] for r in clip.records)

    def progress(p: Progress) -> None:
        fault_hooks.at_progress(clip.job.job_id, p.step, batch)   # test-only
        whole = replace(p, step=done + p.step, total=done + p.total * (clip.count - clip.next))
        clip.emit(("progress", clip.job.job_id,
                   whole if clip.raw_progress else (whole.step, whole.total, whole.losses["total"])))
    return progress


def _source(runner: JobRunner, job: Job, first_frame: torch.Tensor, hits: list[bool]) -> StyleSource:
    """Style targets per stage through the cache, as for photos. Colour preservation uses the
    clip's first frame for every frame (a per-frame reference would itself flicker), and the
    cache keys those variants by the clip's bytes and selection rather than an image file's."""
    p = job.params
    feats = runner.features(p.weights, p.pooling)
    plain = replace(p, preserve_color="none")
    variant = None
    if p.preserve_color != "none":
        selection = json.dumps(job.clip.selection(), sort_keys=True)
        variant = f"{p.preserve_color}:{clip_sha256(job.clip)}:{selection}"

    def key_of(ref, side: int):
        key = key_for(plain, ref.path, job.content, side, feats.weights_id, mask_path=ref.mask)
        return key if variant is None else replace(key, variant=variant)

    return StyleSource(feats, p, first_frame, runner.cache, key_of, hits)


def _saved(path: Path) -> np.ndarray:
    """A saved frame's (H, W, 3) uint8 pixels as written (no colour conversion on the way back)."""
    from PIL import Image

    with Image.open(path) as img:
        return np.asarray(img.convert("RGB"), dtype=np.uint8)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomically, in the sidecar's format."""
    try:
        imaging.atomic_write_bytes(path, json.dumps(data, indent=2, sort_keys=True).encode())
    except OSError as err:
        from ..errors import OutputError

        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None


def _chained(histories: list[tuple[int, dict]]) -> dict[str, list]:
    """The frames' loss histories end to end, steps counted through the clip, with a `frame`
    series; a loss a frame lacks (the first frame has no temporal term) is None there.
    Frames resumed from an interrupted run have none: only this run's are kept."""
    keys = sorted({k for _, h in histories for k in h if k not in ("step", "frame")})
    out: dict[str, list] = {"step": [], "frame": [], **{k: [] for k in keys}}
    for frame, h in histories:
        n = len(h.get("step") or [])
        base = len(out["step"])
        out["step"].extend(range(base + 1, base + n + 1))
        out["frame"].extend([frame] * n)
        for k in keys:
            out[k].extend(h.get(k) or [None] * n)
    return out if out["step"] else {}

"""Run jobs on one device: the VGG is loaded once per (weights, pooling) and reused across jobs.

`JobRunner.run(job)` loads the inputs, gets style targets through the cache, calls the pure
core and writes the image and then its JSON sidecar, each atomically. The sidecar is the
completion marker: an image without one is treated as unfinished.
"""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import torch

from . import __version__, imaging, losses, pixels
from .cache import StyleTargetCache, key_for, style_side
from .errors import DeviceError, NSTError, OutputError
from .features import VGGFeatures
from .jobs import Job
from .optimize import Progress, style_grams, stylize


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


def safe_join(root: Path, relative: str) -> Path:
    """root / relative, refusing anything that would land outside root."""
    if "\0" in relative or Path(relative).is_absolute():
        raise OutputError(f"output path {relative!r} must be relative to the output folder")
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise OutputError(f"output path {relative!r} escapes the output folder {root}")
    return target


class JobRunner:
    """Holds the networks and the cache of one worker; runs one job at a time."""

    def __init__(self, device: torch.device, cache: StyleTargetCache):
        self.device = device
        self.cache = cache
        self._nets: dict[tuple[str, str], VGGFeatures] = {}

    def features(self, weights: str, pooling: str) -> VGGFeatures:
        key = (weights, pooling)
        if key not in self._nets:
            self._nets[key] = VGGFeatures(weights=weights, pooling=pooling).to(self.device)
        return self._nets[key]

    def run(self, job: Job, image_path: Path, sidecar_path: Path | None,
            progress: Callable[[Progress], None] | None = None,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run `job`, write its image and (if asked) its sidecar; returns the record."""
        started, t0 = now_iso(), time.perf_counter()
        p = job.params
        feats = self.features(p.weights, p.pooling)
        torch.manual_seed(p.seed)
        content = imaging.read_image(job.content, long_side_hint=p.size).to(self.device)
        init = None
        if p.init not in ("content", "noise"):
            init = imaging.read_image(p.init, long_side_hint=p.size).to(self.device)
        hits: list[bool] = []
        targets = self._targets_fn(feats, job, content, hits)
        try:
            result = stylize(feats, content, targets, p, init=init, progress=progress)
        except torch.cuda.OutOfMemoryError:
            raise DeviceError(f"CUDA out of memory at size {p.size} on {self.device}; lower size "
                              "or run fewer workers per device") from None
        meta = {"job_id": job.job_id, "params": p.to_dict(), "nst_batch": __version__}
        imaging.save_image(result.image, image_path, p.format, p.quality, meta)
        record = {
            **job.describe(),
            "status": "done",
            "loss_total": result.losses.get("total"),
            "loss_content": result.losses.get("content"),
            "loss_style": result.losses.get("style"),
            "loss_tv": result.losses.get("tv"),
            "steps": result.steps,
            "seconds": round(time.perf_counter() - t0, 3),
            "device": str(self.device),
            "cache_hit": all(hits) if hits else False,
            "weights_id": feats.weights_id,
            "error": None,
            "started_at": started,
            "finished_at": now_iso(),
            "width": int(result.image.shape[-1]),
            "height": int(result.image.shape[-2]),
            **(extra or {}),
        }
        if sidecar_path is not None:
            write_sidecar(sidecar_path, record)
        return record

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
                    key, lambda ref=ref: style_grams(
                        feats, pixels.resize_long_side(style_image(ref.path), style_side(p, long_side)),
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

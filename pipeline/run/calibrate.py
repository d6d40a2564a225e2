"""`plan`'s estimated run time: the jobs' work over a throughput measured once and cached.

The unit is the ETA's (views/eta.py): a stage of a job costs `evaluations × H × W` of its image.
A calibration times a few evaluations (after one warm-up) of the run's largest batch — the
largest image of the jobs to run, at the batch size a worker would use on that device (1 on
CPU; on CUDA up to 8 jobs of that shape) — with the manifest's weights and the device's
precision, and keeps pixel-evaluations per second. It is cached per (device kind and name,
torch version, image size, batch size, weights, precision) as one small JSON file in the user
cache dir, written atomically; a corrupt entry is measured again with one warning line. The
estimate is `work of the jobs to run / (throughput × workers on that device)`: it ignores the
style-target computation and the per-job overhead, and jobs that converge early (tol) finish
sooner.

Everything but `measure` reads no torch: `plan` shows a cached figure in a fraction of a second.
"""
from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

from ..imaging import atomic_write_bytes
from ..views.eta import remaining_work
from .grouping import job_stages
from .grouping import content_shape

if TYPE_CHECKING:
    from .jobs import Job

WARMUP = 1         # evaluations not timed (allocation, cudnn autotuning, first-touch of pages)
TIMED = 3          # evaluations timed
MAX_GPU_BATCH = 8  # as the executor's default limit (executors/base.py)
CACHE_VERSION = 1
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CalibrationKey:
    device: str        # cpu | cuda (the kind the run's workers use)
    device_name: str   # CPU model or GPU model, read without torch
    torch: str
    height: int
    width: int
    batch: int
    weights: str       # weights id (engine/weights.py)
    precision: str     # fp32 | bf16
    threads: int = 0   # CPU: torch threads of one worker (the CPUs shared among the workers)

    def filename(self) -> str:
        import hashlib

        text = json.dumps(self.__dict__, sort_keys=True)
        return f"calibration-{hashlib.sha256(text.encode()).hexdigest()[:20]}.json"


@dataclass(frozen=True)
class Calibration:
    key: CalibrationKey
    throughput: float  # pixel-evaluations per second of one worker at this batch size
    evaluations: int
    measured_at: float  # time.time()


def default_calibration_dir() -> Path:
    """`calibration/` in $NST_BATCH_CACHE_DIR, else beside `style-targets/` in the user cache dir."""
    from .cache import ENV_VAR, default_cache_dir

    root = default_cache_dir()
    return root / "calibration" if os.environ.get(ENV_VAR) else root.parent / "calibration"


def work_of(jobs: Sequence["Job"]) -> float:
    """Pixel-evaluations of these jobs, every stage (as the ETA counts them)."""
    return sum(remaining_work(job_stages(j), 0) for j in jobs)


def largest_job(jobs: Sequence["Job"]) -> "Job":
    """The job whose final image has the most pixels (the costliest evaluation)."""
    return max(jobs, key=lambda j: max(px for px, _ in job_stages(j)))


def batch_for(device: str, jobs: Sequence["Job"], biggest: "Job") -> int:
    """The batch a worker would run `biggest` in: 1 on CPU; on CUDA the jobs of its shape, ≤ 8."""
    if device != "cuda":
        return 1
    shape = _final_shape(biggest)
    return max(1, min(MAX_GPU_BATCH, sum(1 for j in jobs if _final_shape(j) == shape)))


def _final_shape(job: "Job") -> tuple[int, int]:
    from ..engine.layers import scaled_size

    shape = content_shape(job) or (job.params.size, job.params.size)
    return scaled_size(*shape, job.params.size)


def device_name(device: str) -> str:
    """The CPU or GPU model from /proc (no torch): a cached figure is only reused on the same one."""
    sources = ["/proc/cpuinfo"] if device == "cpu" else sorted(
        str(p / "information") for p in Path("/proc/driver/nvidia/gpus").glob("*"))
    wanted = "model name" if device == "cpu" else "model"
    for source in sources:
        try:
            for line in Path(source).read_text(errors="replace").splitlines():
                name, _, value = line.partition(":")
                if name.strip().lower() == wanted and value.strip():
                    return value.strip()
        except OSError:
            continue
    import platform

    return platform.processor() or platform.machine() or "unknown"


def torch_version() -> str:
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return "none"


def key_for_run(device: str, jobs: Sequence["Job"], threads: int = 0) -> CalibrationKey:
    from ..engine.weights import weights_id

    biggest = largest_job(jobs)
    h, w = _final_shape(biggest)
    return CalibrationKey(device, device_name(device), torch_version(), h, w,
                          batch_for(device, jobs, biggest), weights_id(biggest.params.weights),
                          "bf16" if device == "cuda" else "fp32", threads if device == "cpu" else 0)


def read_cached(root: Path, key: CalibrationKey) -> Calibration | None:
    """The cached figure, or None when there is none; a corrupt entry warns once and is None."""
    path = root / key.filename()
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != CACHE_VERSION or raw.get("key") != key.__dict__:
            raise ValueError("written for another device, size or version")
        throughput = float(raw["throughput"])
        if not (math.isfinite(throughput) and throughput > 0):
            raise ValueError(f"throughput {throughput!r} is not a positive number")
        return Calibration(key, throughput, int(raw["evaluations"]), float(raw["measured_at"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as err:
        log.warning("calibration cache %s is unreadable (%s); measuring again", path, err)
        return None


def write_cached(root: Path, calibration: Calibration) -> Path | None:
    path = root / calibration.key.filename()
    payload = {"version": CACHE_VERSION, "key": calibration.key.__dict__,
               "throughput": calibration.throughput, "evaluations": calibration.evaluations,
               "measured_at": calibration.measured_at}
    try:
        root.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, (json.dumps(payload, indent=1) + "\n").encode())
    except OSError as err:   # a read-only cache: the figure is still shown, just not kept
        log.warning("could not write the calibration cache %s (%s)", path, err)
        return None
    return path


def measure(key: CalibrationKey, biggest: "Job", device: str) -> float:
    """Pixel-evaluations per second of `TIMED` evaluations of a batch like `biggest`'s, after
    `WARMUP`: random content and style targets (the cost does not depend on the pixels)."""
    import torch

    from ..engine.features import VGGFeatures
    from ..engine.optimize import JobInput, Precision, stylize_batch
    from ..engine.objective import style_grams
    from .worker import resolve_device

    dev = resolve_device(device if device != "cuda" else "cuda:0")
    if key.threads:
        torch.set_num_threads(key.threads)   # as a worker of the run would (executors/local.py)
    precision = Precision.for_device(dev, key.precision)
    params = replace(biggest.params, steps=WARMUP + TIMED, multiscale=1, tol=0.0, size=max(key.height, key.width))
    feats = VGGFeatures(weights=params.weights, pooling=params.pooling).to(dev)
    if precision.channels_last:
        feats = feats.to(memory_format=torch.channels_last)
    gen = torch.Generator().manual_seed(0)
    content = torch.rand((1, 3, key.height, key.width), generator=gen).to(dev)
    targets = style_grams(feats, torch.rand((1, 3, key.height, key.width), generator=gen).to(dev),
                          params.style_layers)
    marks: dict[int, float] = {}

    def progress(p: Any) -> None:   # reports read the losses back: the device is synchronized
        marks.setdefault(p.step, time.perf_counter())

    specs = [JobInput(content, lambda _side: targets, params, progress=progress if i == 0 else None)
             for i in range(key.batch)]
    stylize_batch(feats, specs, precision, progress_every=0.0)
    seconds = marks[WARMUP + TIMED] - marks[WARMUP]
    return TIMED * key.batch * key.height * key.width / max(seconds, 1e-9)


def calibration_for(device: str, jobs: Sequence["Job"], root: Path, calibrate: bool, threads: int = 0,
                    measure_fn: Callable[[CalibrationKey, "Job", str], float] | None = None,
                    clock: Callable[[], float] = time.time) -> Calibration | None:
    """The cached figure; when there is none and `calibrate`, a fresh measurement (then cached)."""
    key = key_for_run(device, jobs, threads)
    cached = read_cached(root, key)
    if cached is not None or not calibrate:
        return cached
    calibration = Calibration(key, float((measure_fn or measure)(key, largest_job(jobs), device)), TIMED, clock())
    if not (math.isfinite(calibration.throughput) and calibration.throughput > 0):
        return None
    write_cached(root, calibration)
    return calibration


def estimate(jobs: Sequence["Job"], calibration: Calibration, workers: int) -> dict[str, Any]:
    """`plan`'s time row: the work, the seconds, and how they were found."""
    work = work_of(jobs)
    seconds = work / (calibration.throughput * max(1, workers))
    k = calibration.key
    return {"seconds": seconds, "work": work, "workers": workers, "device": k.device,
            "throughput": calibration.throughput, "evaluations": calibration.evaluations,
            "side": max(k.height, k.width), "batch": k.batch, "precision": k.precision,
            "measured_at": calibration.measured_at}

"""What the throughput benchmark measures: convolution FLOPs, and wall time, CPU time and peak
memory of a timed region. Used by benchmarks/throughput.py."""
from __future__ import annotations

import ctypes
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import torch

from pipeline.engine import pixels
from pipeline.engine.features import LAYER_INDEX, LAYER_NAMES
from pipeline.engine.optimize import Result, plan_stages
from pipeline.params import Params

BLOCK_CHANNELS = (64, 128, 256, 512, 512)


def vgg_flops(h: int, w: int, deepest: str) -> float:
    """Forward FLOPs of VGG-19's convolutions up to `deepest` for one (h, w) image: 2·Cin·Cout·9·H·W each."""
    total, cin = 0.0, 3
    for name in LAYER_NAMES[: LAYER_INDEX[deepest] + 1]:
        if name.startswith("conv"):
            cout = BLOCK_CHANNELS[int(name[4]) - 1]
            total += 2 * cin * cout * 9 * h * w
            cin = cout
        elif name.startswith("pool"):
            h, w = h // 2, w // 2
    return total


def eval_flops(params: Params, h: int, w: int) -> float:
    """One objective evaluation: forward, then the backward to the input (weights are frozen),
    which costs what the forward does."""
    deepest = max([*params.content_layers, *params.style_layers], key=LAYER_INDEX.__getitem__)
    return 2 * vgg_flops(h, w, deepest)


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _trim_heap() -> None:
    """Give freed heap back to the OS so one phase's RSS peak does not hide in the last one's."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


@dataclass
class Phase:
    """Wall and CPU seconds and peak memory of one timed region."""
    device: torch.device
    wall: float = 0.0
    cpu: float = 0.0
    peak_bytes: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def __enter__(self) -> "Phase":
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            _trim_heap()
            self._base = self._peak = _rss()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, _rss())

    def __exit__(self, *exc) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu
        if self.device.type == "cuda":
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._peak, _rss()) - self._base


@dataclass
class Row:
    """One variant's totals: time summed over its timed phases, the largest peak per image."""
    variant: str
    evals: int
    wall: float = 0.0
    cpu: float = 0.0
    peak_per_image: float = 0.0
    images: int = 0
    losses: list[float] = field(default_factory=list)
    flops: float = 0.0

    def add(self, phase: Phase, in_flight: int) -> None:
        self.wall += phase.wall
        self.cpu += phase.cpu
        self.peak_per_image = max(self.peak_per_image, phase.peak_bytes / in_flight)

    def per_image(self) -> float:
        return self.wall / self.images

    def mean_loss(self, subset: int | None = None) -> float:
        values = self.losses[:subset] if subset else self.losses
        return sum(values) / len(values)


def pipeline_flops(jobs: Sequence[Any], params: Params, results: Sequence[Result]) -> float:
    """Σ over jobs and stages of evaluations × FLOPs at that stage's size (scaled by the
    evaluations performed when `tol` ended stages early)."""
    total = 0.0
    for job, result in zip(jobs, results):
        shape = tuple(job.content.shape[-2:])
        stages = plan_stages(params, shape)
        planned = sum(b for _, b in stages)
        job_flops = sum(b * eval_flops(params, *pixels.scaled_size(*shape, side)) for side, b in stages)
        total += job_flops * result.steps / planned
    return total

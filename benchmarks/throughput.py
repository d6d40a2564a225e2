"""Throughput benchmark: the naive one-job-at-a-time reference against the batch pipeline.

Both variants optimize the same objective (pipeline.engine.objective.Objective with the project's
default Params: content conv4_2, style conv1_1..conv5_1) towards the same style targets
(style_grams), on the same N jobs, with the same evaluation budget, in one process:

- reference: what most implementations do. One job at a time, fp32, torch.optim.LBFGS
  (history 100, no line search, tolerances off so it uses the whole budget), a closure that
  calls `.item()` every step for logging, the style Grams computed per job.
- pipeline: optimize.stylize_batch with Precision.for_device (bf16 autocast on CUDA), jobs
  batched as the worker batches them (1 per batch on CPU, what fits on CUDA), coarse-to-fine
  stages (`--multiscale`), style targets through a StyleTargetCache.

Final losses are measured the same way for both: the fp32 objective on the clamped image.
When the pipeline's mean final loss is above 1.01 × the reference's, its budget is raised in
25 % steps until it gets there; when it is below, the budget is lowered while it stays there.
The time at the smallest budget that matches is the honest "time at equal loss".
`--overhead` instead runs a 100-job CPU manifest through `run_manifest` and measures the
scheduling gaps between jobs. Results and commands: docs/benchmarks.md.

    .venv/bin/python benchmarks/throughput.py --device cpu --n 4 --size 128 --evals 300 --threads 1 --write-docs
    .venv/bin/python benchmarks/throughput.py --overhead --write-docs
"""
from __future__ import annotations

import argparse
import ctypes
import io
import json
import os
import platform
import re
import shlex
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from pipeline import imaging  # noqa: E402
from pipeline.engine import pixels
from pipeline.run.cache import StyleTargetCache, key_for, style_side  # noqa: E402
from pipeline.errors import NSTError  # noqa: E402
from pipeline.engine.features import LAYER_INDEX, LAYER_NAMES, VGGFeatures  # noqa: E402
from pipeline.engine.objective import Objective, style_grams  # noqa: E402
from pipeline.engine.optimize import JobInput, Precision, Result, plan_stages, stylize_batch  # noqa: E402
from pipeline.params import Params  # noqa: E402
from pipeline.run.worker import MAX_BATCH, resolve_device  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SAMPLE_CONTENT = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
SAMPLE_STYLE = ("hubble_deep_field.jpg", "ihc.png")
LOSS_SLACK = 1.01            # the pipeline's mean final loss may be at most 1 % above the reference's
BLOCK_CHANNELS = (64, 128, 256, 512, 512)
GPU_COMMAND = (".venv/bin/python benchmarks/throughput.py --device cuda --size 512 --evals 300 --n 32 "
               "--reference-jobs 8 --write-docs")


# ----------------------------------------------------------------------------- inputs

@dataclass(frozen=True)
class BenchJob:
    name: str
    content_path: Path
    style_path: Path
    content: torch.Tensor      # (1, 3, H, W) RGB [0, 1], full resolution (centre-cropped unless --keep-aspect)
    style: torch.Tensor        # (1, 3, H, W) RGB [0, 1], full resolution


def sample_images() -> tuple[list[Path], list[Path]]:
    try:
        import skimage.data
    except ImportError:
        raise SystemExit("the default images are scikit-image's samples: pip install 'nst-batch[demo]', "
                         "or pass --content and --style") from None
    data = Path(skimage.data.__file__).parent
    return [data / n for n in SAMPLE_CONTENT], [data / n for n in SAMPLE_STYLE]


def centre_square(image: torch.Tensor) -> torch.Tensor:
    h, w = image.shape[-2:]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[..., top:top + side, left:left + side].contiguous()


def build_jobs(contents: list[Path], styles: list[Path], n: int, crop: bool, device: torch.device) -> list[BenchJob]:
    """N jobs: every content once with the styles in turn, then again with the next style, and so on."""
    pairs = [(c, styles[(k + r) % len(styles)]) for r in range(len(styles)) for k, c in enumerate(contents)]
    loaded: dict[tuple[Path, bool], torch.Tensor] = {}

    def load(path: Path, square: bool) -> torch.Tensor:
        if (path, square) not in loaded:
            image = imaging.read_image(path)
            loaded[path, square] = (centre_square(image) if square else image).to(device)
        return loaded[path, square]

    jobs = []
    for i in range(n):
        c, s = pairs[i % len(pairs)]
        jobs.append(BenchJob(f"{c.stem} × {s.stem}", c, s, load(c, crop), load(s, False)))
    return jobs


# ----------------------------------------------------------------------------- measurement

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


# ----------------------------------------------------------------------------- the two variants

def reference_job(feats: VGGFeatures, job: BenchJob, params: Params, evals: int) -> tuple[dict[str, float], int]:
    """One job the usual way; returns its final losses (fp32, clamped image) and evaluations used."""
    content = pixels.resize_long_side(job.content, params.size)
    style = pixels.resize_long_side(job.style, style_side(params, params.size))
    targets = style_grams(feats, style, params.style_layers)
    with torch.no_grad():
        content_targets = feats(content, params.content_layers)
    objective = Objective(feats, content_targets, targets, params)
    x = content.clone().requires_grad_(True)
    # tolerance_* = -1: never stop early, so the budget is used exactly as the pipeline uses it.
    opt = torch.optim.LBFGS([x], lr=params.learning_rate, max_iter=evals, max_eval=evals, history_size=100,
                            line_search_fn=None, tolerance_grad=-1, tolerance_change=-1)
    log: list[float] = []

    def closure() -> torch.Tensor:
        opt.zero_grad()
        total, _ = objective(x)
        loss = total.sum()
        loss.backward()
        log.append(loss.item())     # per-step logging, as the usual loops do: one host sync each
        return loss

    opt.step(closure)
    with torch.no_grad():
        _, parts = objective(x.detach().clamp(0.0, 1.0))
    return {k: float(v[0]) for k, v in parts.items()}, len(log)


def pipeline_targets(feats: VGGFeatures, job: BenchJob, params: Params, cache: StyleTargetCache,
                     device: torch.device) -> Callable[[int], dict[str, torch.Tensor]]:
    """Stage size -> style Grams through the cache, keyed as the worker keys them."""
    def targets(long_side: int) -> dict[str, torch.Tensor]:
        key = key_for(params, str(job.style_path), str(job.content_path), long_side, feats.weights_id)
        grams, _ = cache.get_or_compute(key, lambda: style_grams(
            feats, pixels.resize_long_side(job.style, style_side(params, long_side)), params.style_layers))
        return {k: v.to(device) for k, v in grams.items()}
    return targets


def run_pipeline(feats: VGGFeatures, jobs: Sequence[BenchJob], params: Params, precision: Precision,
                 batch: int, cache: StyleTargetCache, device: torch.device) -> tuple[list[Result], int]:
    """Run every job through stylize_batch, `batch` per call, grouped by shape like the worker;
    an out-of-memory error halves the batch and retries. Returns results and the batch used."""
    results: dict[int, Result] = {}
    groups: dict[tuple[tuple[int, int], ...], list[int]] = {}
    for i, job in enumerate(jobs):
        # As grouping.batch_key: contents of any resolution share a batch when every stage's shape agrees.
        shape = tuple(job.content.shape[-2:])
        stages = tuple(pixels.scaled_size(*shape, side) for side in params.stage_sizes(shape))
        groups.setdefault(stages, []).append(i)
    for indices in groups.values():
        start = 0
        while start < len(indices):
            chunk = indices[start:start + batch]
            specs = [JobInput(jobs[i].content, pipeline_targets(feats, jobs[i], params, cache, device), params,
                              progress=lambda p: None) for i in chunk]
            try:
                # progress_every as the worker uses it: losses are read back twice a second.
                out = stylize_batch(feats, specs, precision, progress_every=0.5)
            except torch.cuda.OutOfMemoryError:
                if batch == 1:
                    raise SystemExit(f"error: out of memory at batch 1, size {params.size}; lower --size")
                del specs
                torch.cuda.empty_cache()
                batch = max(1, batch // 2)
                continue
            for i, result in zip(chunk, out):
                if isinstance(result, NSTError):
                    raise SystemExit(f"error: {jobs[i].name}: {result}")
                results[i] = result
            start += len(chunk)
    return [results[i] for i in range(len(jobs))], batch


def auto_batch(feats: VGGFeatures, params: Params, shape: tuple[int, int], precision: Precision,
               device: torch.device, n: int) -> int:
    """Like JobRunner._capacity: 1 on CPU; on CUDA what fits from a measured one-image footprint."""
    if device.type != "cuda":
        return 1
    h, w = pixels.scaled_size(*shape, params.size)
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.rand(1, 3, h, w, device=device, requires_grad=True)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision.bf16):
        acts = feats(x.contiguous(memory_format=torch.channels_last), [*params.content_layers, *params.style_layers])
        sum(a.float().pow(2).mean() for a in acts.values()).backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    del x, acts
    history = 2 * min(params.steps, 100) * 3 * h * w * 4
    footprint = peak + history + 4 * 3 * h * w * 4
    free, _ = torch.cuda.mem_get_info(device)
    free += torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return max(1, min(MAX_BATCH, n, int(0.85 * free // footprint)))


# ----------------------------------------------------------------------------- one benchmark

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


def pipeline_flops(jobs: Sequence[BenchJob], params: Params, results: Sequence[Result]) -> float:
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


@dataclass
class Setup:
    """What every timed run of one benchmark shares."""
    device: torch.device
    ref_feats: VGGFeatures
    pipe_feats: VGGFeatures
    precision: Precision
    batch: int


def time_reference(setup: Setup, row: Row, job: BenchJob, params: Params) -> None:
    _cudnn(setup.device, False)
    with Phase(setup.device) as phase:
        losses, used = reference_job(setup.ref_feats, job, params, params.steps)
    row.add(phase, 1)
    row.images += 1
    row.losses.append(losses["total"])
    row.flops += used * eval_flops(params, *pixels.scaled_size(*job.content.shape[-2:], params.size))
    say(f"  reference  {job.name}: loss {losses['total']:.5g} ({used} evaluations, {phase.wall:.1f} s)")


def time_pipeline(setup: Setup, row: Row, jobs: Sequence[BenchJob], params: Params, cache: StyleTargetCache) -> None:
    _cudnn(setup.device, True)
    with Phase(setup.device) as phase:
        results, setup.batch = run_pipeline(setup.pipe_feats, jobs, params, setup.precision, setup.batch, cache,
                                            setup.device)
    row.add(phase, min(setup.batch, len(jobs)))
    row.images += len(jobs)
    row.losses += [r.losses["total"] for r in results]
    row.flops += pipeline_flops(jobs, params, results)
    for job, r in zip(jobs, results):
        say(f"  {row.variant}  {job.name}: loss {r.losses['total']:.5g}"
            + (f" ({phase.wall:.1f} s)" if len(jobs) == 1 else ""))


def benchmark(args: argparse.Namespace, device: torch.device) -> dict:
    torch.manual_seed(0)
    if bool(args.content) != bool(args.style):
        raise SystemExit("error: give both --content and --style, or neither (scikit-image's samples)")
    contents, styles = (args.content, args.style) if args.content else sample_images()
    jobs = build_jobs([Path(p) for p in contents], [Path(p) for p in styles], args.n, not args.keep_aspect, device)
    ref_jobs = jobs[: args.reference_jobs or len(jobs)]
    base = Params(size=args.size, steps=args.evals)
    pipe_params = base.replace(multiscale=args.multiscale, tol=args.tol)
    precision = Precision.for_device(device, args.precision)

    ref_feats = VGGFeatures().to(device)
    pipe_feats = VGGFeatures().to(device)
    if precision.channels_last:
        pipe_feats = pipe_feats.to(memory_format=torch.channels_last)
    if args.compile:
        from pipeline.run.worker import _compiled
        pipe_feats = _compiled(pipe_feats)
    batch = args.batch_size or auto_batch(pipe_feats, pipe_params, tuple(jobs[0].content.shape[-2:]),
                                          precision, device, len(jobs))
    setup = Setup(device, ref_feats, pipe_feats, precision, batch)
    # One job at a time on both sides: alternate them, so load from other processes on a shared
    # machine falls on both alike instead of on whichever phase it happens to coincide with.
    interleave = batch == 1 and not args.no_interleave
    say(f"{len(jobs)} jobs at {args.size} px, {args.evals} evaluations; device {device_name(device)}; "
        f"pipeline batch {batch}, {'bf16' if precision.bf16 else 'fp32'}, multiscale {args.multiscale}"
        f"{'; reference and pipeline interleaved job by job' if interleave else ''}")

    cache_root = Path(tempfile.mkdtemp(prefix="nst-bench-cache-"))
    say("warm-up ...")
    _cudnn(device, False)
    reference_job(ref_feats, jobs[0], base, 3)
    _cudnn(device, True)
    warm = pipe_params.replace(steps=max(4, 2 * args.multiscale))
    run_pipeline(pipe_feats, jobs[:batch], warm, precision, batch, StyleTargetCache(cache_root / "warm"), device)

    ref, pipe = Row("reference", args.evals), Row("pipeline", args.evals)
    cache = StyleTargetCache(cache_root / "run")
    say(f"reference ({len(ref_jobs)} jobs) and pipeline ({len(jobs)} jobs) ...")
    if interleave:
        for i, job in enumerate(jobs):
            if i < len(ref_jobs):
                time_reference(setup, ref, job, base)
            time_pipeline(setup, pipe, [job], pipe_params, cache)
    else:
        for job in ref_jobs:
            time_reference(setup, ref, job, base)
        time_pipeline(setup, pipe, jobs, pipe_params, cache)
    rows = [ref, pipe]
    first_passes = cache.stats["forward_passes"]
    # The same styles again, through a fresh cache object over the same folder (nothing in memory).
    again = StyleTargetCache(cache_root / "run")
    run_pipeline(pipe_feats, jobs, pipe_params.replace(steps=args.multiscale), precision, setup.batch, again, device)
    cache_stats = {"first_run_forward_passes": first_passes, "second_run_forward_passes": again.stats["forward_passes"],
                   "second_run_hits": again.stats["hits"]}
    say(f"cache: {first_passes} style forward pass(es) in the first run, "
        f"{again.stats['forward_passes']} in the second ({again.stats['hits']} hits)")

    n_ref, target = len(ref_jobs), LOSS_SLACK * ref.mean_loss()
    if not args.no_search:
        # Worse at equal evaluations: raise the budget until it matches. Better: lower it, to find
        # what matching the reference really costs. Either way in 25 % steps of --evals.
        up = pipe.mean_loss(n_ref) > target
        factor = 1.0
        while True:
            factor = round(factor + (0.25 if up else -0.25), 2)
            if factor > args.search_max + 1e-9 or factor < 0.25 - 1e-9:
                break
            evals = max(args.multiscale, round(args.evals * factor))
            say(f"pipeline mean loss {rows[-1].mean_loss(n_ref):.5g} {'>' if up else '<='} 1.01 × reference "
                f"{ref.mean_loss():.5g}: trying {evals} evaluations ...")
            row = Row(f"pipeline, {factor:g}× evaluations", evals)
            time_pipeline(setup, row, jobs, pipe_params.replace(steps=evals), StyleTargetCache(cache_root / f"s{evals}"))
            rows.append(row)
            if (row.mean_loss(n_ref) <= target) == up:     # reached it going up, lost it going down
                break
    return {"device": device, "args": args, "rows": rows, "batch": setup.batch, "precision": precision,
            "cache": cache_stats, "n_ref": n_ref, "jobs": [j.name for j in jobs], "params": pipe_params,
            "load": _loadavg(), "interleaved": interleave}


def _cudnn(device: torch.device, benchmark: bool) -> None:
    # The reference keeps torch's defaults; the pipeline autotunes as JobRunner does on CUDA.
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = benchmark


# ----------------------------------------------------------------------------- scheduling overhead

def overhead(args: argparse.Namespace) -> dict:
    """Run a CPU manifest of tiny jobs; gaps between a worker's jobs over its busy time."""
    from rich.console import Console

    from pipeline.run.orchestrate import RunOptions, prepare, read_sidecar, run_manifest
    from pipeline.views.progress import RunDisplay
    from pipeline.executors.local import plan_slots

    with tempfile.TemporaryDirectory(prefix="nst-bench-overhead-") as tmp:
        root = Path(tmp)
        n_content = max(1, int(round(args.overhead_jobs ** 0.5)))
        n_style = -(-args.overhead_jobs // n_content)
        for folder, count, seed in (("content", n_content, 0), ("style", n_style, 1000)):
            (root / folder).mkdir()
            for i in range(count):
                _tiny_image(root / folder / f"{folder}{i:03d}.png", args.overhead_size, seed + i)
        manifest = root / "manifest.yaml"
        manifest.write_text(
            f"version: 1\noutput: out\ncontent: [content/]\nstyle: [style/]\n"
            f"params: {{size: {args.overhead_size}, steps: {args.overhead_steps}}}\n"
            f"devices: cpu\nworkers_per_device: {args.overhead_workers}\n")
        _, all_jobs = prepare(manifest)
        say(f"overhead: {len(all_jobs)} jobs of {args.overhead_size} px, {args.overhead_steps} steps, "
            f"{args.overhead_workers} CPU workers ...")
        display = RunDisplay(len(all_jobs), [], console=Console(file=io.StringIO()), live=False)
        t0 = time.time()
        summary = run_manifest(manifest, RunOptions(devices="cpu", live=False, cache_dir=root / "cache"),
                               display=display)
        wall = time.time() - t0
        records = [read_sidecar(root / "out", job) for job in all_jobs]
    done = [r for r in records if r and r.get("status") == "done"]
    by_worker: dict[int, list[tuple[float, float]]] = {}
    for r in done:
        by_worker.setdefault(int(r.get("worker", -1)), []).append((_ts(r["started_at"]), _ts(r["finished_at"])))
    workers = {}
    for index, spans in sorted(by_worker.items()):
        spans.sort()
        busy = sum(f - s for s, f in spans)
        gaps = [max(0.0, spans[k + 1][0] - spans[k][1]) for k in range(len(spans) - 1)]
        workers[index] = {"jobs": len(spans), "busy": busy, "gaps": sum(gaps),
                          "mean_gap_ms": 1000 * sum(gaps) / max(1, len(gaps)),
                          "max_gap_ms": 1000 * max(gaps, default=0.0),
                          "first_start": spans[0][0] - t0}
    busy = sum(w["busy"] for w in workers.values())
    gaps = sum(w["gaps"] for w in workers.values())
    return {"jobs": len(all_jobs), "done": len(done), "wall": wall, "workers": workers, "busy": busy,
            "gaps": gaps, "overhead": gaps / busy if busy else float("nan"),
            "mean_job_s": busy / max(1, len(done)), "cache_hits": sum(1 for r in done if r.get("cache_hit")),
            "summary": {k: summary.get(k) for k in ("done", "failed", "retried", "respawned")},
            "args": args, "load": _loadavg(), "threads": plan_slots("cpu", args.overhead_workers, None, lambda: 0)[0].threads}


def _tiny_image(path: Path, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    base = rng.uniform(0, 1, (3, 1, 1))
    freq = rng.uniform(2, 8, 3)
    rgb = np.stack([0.5 + 0.4 * np.sin(freq[c] * (xx + base[c] * yy) * np.pi) for c in range(3)], -1)
    rgb = np.clip(rgb + rng.normal(0, 0.03, rgb.shape), 0, 1)
    Image.fromarray((rgb * 255).astype(np.uint8), "RGB").save(path)


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


# ----------------------------------------------------------------------------- reporting

def say(text: str) -> None:
    print(text, flush=True)


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = platform.processor() or "CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{model} ({cpus} CPUs, {torch.get_num_threads()} torch thread(s))"


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


def throughput_table(report: dict) -> str:
    rows, ref = report["rows"], report["rows"][0]
    n_ref, cpu = report["n_ref"], report["device"].type == "cpu"
    target = ref.mean_loss()
    head = ["variant", "evaluations", "s/image"] + (["CPU s/image"] if cpu else []) + [
        "speed-up", "mean final loss", "vs reference", "peak MB/image", "TFLOP/s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        loss = row.mean_loss(n_ref)
        cells = [row.variant, str(row.evals), f"{row.per_image():.3g}"]
        if cpu:
            cells.append(f"{row.cpu / row.images:.3g}")
        cells += [f"{ref.per_image() / row.per_image():.2f}×", f"{loss:.5g}", f"{100 * (loss / target - 1):+.2f} %",
                  f"{row.peak_per_image / 2**20:.0f}", f"{row.flops / row.wall / 1e12:.3g}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def verdict(report: dict) -> str:
    rows, ref = report["rows"], report["rows"][0]
    n_ref, cpu = report["n_ref"], report["device"].type == "cpu"
    target = LOSS_SLACK * ref.mean_loss()

    def speed(row: Row, word: str = "") -> str:
        text = f"**{ref.per_image() / row.per_image():.2f}×**{word}"
        return text + (f" (by CPU time {ref.cpu / ref.images / (row.cpu / row.images):.2f}×)" if cpu else "")

    first = rows[1]
    lines = [f"At equal evaluations ({first.evals}) the pipeline is {speed(first, ' faster')}, with a mean final loss "
             f"{100 * (first.mean_loss(n_ref) / ref.mean_loss() - 1):+.2f} % from the reference's."]
    passing = [r for r in rows[1:] if r.mean_loss(n_ref) <= target]
    if not passing:
        lines.append(f"It did not reach the reference's mean final loss (within 1 %) with up to {rows[-1].evals} "
                     "evaluations: no speed-up at equal loss can be claimed from this run.")
        return " ".join(lines)
    best = min(passing, key=lambda r: r.evals)
    if best is first and len(rows) > 2:
        lines.append(f"With {rows[-1].evals} evaluations its mean loss is above 1.01 × the reference's, so the "
                     f"speed-up at equal loss is the one at equal evaluations: {speed(first)}.")
    elif best is first:
        lines.append(f"Speed-up at equal loss (within 1 %): {speed(first)}.")
    else:
        lines.append(f"It reaches the reference's mean final loss (within 1 %) with {best.evals} evaluations: "
                     f"speed-up at equal loss {speed(best)}.")
    # The mean can hide a job that got worse; say what the stricter, job-by-job reading gives.
    strict = [r for r in rows[1:] if all(a <= LOSS_SLACK * b for a, b in zip(r.losses[:n_ref], ref.losses))]
    if strict:
        each = min(strict, key=lambda r: r.evals)
        lines.append(f"Judged job by job (every job within 1 % of its own reference loss, or lower): "
                     f"{each.evals} evaluations, {speed(each)}.")
    else:
        lines.append("Judged job by job (every job within 1 % of its own reference loss), none of the budgets "
                     "run here qualifies; see the losses below.")
    return " ".join(lines)


def loss_table(report: dict) -> str:
    """Final loss of every job the reference ran, under each variant."""
    rows, n_ref = report["rows"], report["n_ref"]
    head = ["job"] + [f"{r.variant} ({r.evals})" for r in rows]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, name in enumerate(report["jobs"][:n_ref]):
        lines.append("| " + " | ".join([name] + [f"{r.losses[i]:.4g}" for r in rows]) + " |")
    return "\n".join(lines)


def flops_note(report: dict) -> str:
    p = report["params"]
    at512 = eval_flops(p, 512, 512) / 1e9
    at = eval_flops(p, p.size, p.size) / 1e9
    return (f"FLOPs count VGG-19's convolutions up to {max([*p.content_layers, *p.style_layers], key=LAYER_INDEX.__getitem__)} "
            f"(2·Cin·Cout·9·H·W each), ×2 for the forward pass and the backward pass to the image (weights frozen): "
            f"{at:.1f} GFLOP per evaluation at {p.size}×{p.size}, {at512:.0f} GFLOP at 512×512 (the issue quotes ≈ 380). "
            "Pooling, ReLU, Gram matrices, losses and the optimizer are not counted; the pipeline's coarse stages "
            "are counted at their own size.")


def render_throughput(report: dict, command: str) -> tuple[str, str]:
    device, args = report["device"], report["args"]
    name = device_name(device)
    key = f"{device.type}: {name.split(' (')[0]}"
    prec = "bf16 autocast (Grams and losses fp32)" if report["precision"].bf16 else "fp32"
    cache = report["cache"]
    jobs = ", ".join(dict.fromkeys(report["jobs"]))
    body = [
        f"## {name}", "",
        f"- torch {torch.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average at the end {report['load']}",
        f"- {args.n} jobs ({jobs}), {args.size} px, {args.evals} evaluations; "
        f"the reference ran {report['n_ref']} of them",
        f"- pipeline: batch {report['batch']}, {prec}, multiscale {args.multiscale}, tol {args.tol:g}"
        f"{', torch.compile' if args.compile else ''}"
        f"{'; reference and pipeline jobs alternated one by one' if report['interleaved'] else ''}",
        f"- command: `{command}`", "",
        throughput_table(report), "",
        verdict(report), "",
        "Final loss per job:", "",
        loss_table(report), "",
        f"Style-target cache: {cache['first_run_forward_passes']} style forward pass(es) in the timed run, "
        f"**{cache['second_run_forward_passes']}** when the same styles run again "
        f"({cache['second_run_hits']} cache hits).", "",
        flops_note(report), "",
    ]
    return key, "\n".join(body)


def render_overhead(report: dict, command: str) -> tuple[str, str]:
    args = report["args"]
    lines = [
        f"## Scheduling overhead: {device_name(torch.device('cpu')).split(' (')[0]}, {args.overhead_workers} "
        f"workers × {report['threads']} torch thread(s)", "",
        f"- torch {torch.__version__}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, load average at the end {report['load']}",
        f"- {report['jobs']} jobs of {args.overhead_size} px, {args.overhead_steps} steps, "
        f"{args.overhead_workers} CPU workers, through `run_manifest` (live display off); wall {report['wall']:.1f} s, "
        f"mean job {1000 * report['mean_job_s']:.0f} ms, {report['done']} done, {report['cache_hits']} style-target cache hits",
        f"- command: `{command}`", "",
        "| worker | jobs | busy s | gaps s | mean gap ms | max gap ms | first job starts at s |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, w in report["workers"].items():
        lines.append(f"| {index} | {w['jobs']} | {w['busy']:.2f} | {w['gaps']:.3f} | {w['mean_gap_ms']:.1f} | "
                     f"{w['max_gap_ms']:.0f} | {w['first_start']:.1f} |")
    ok = report["overhead"] < 0.02
    lines += ["", f"Overhead = Σ gaps / Σ busy = **{100 * report['overhead']:.2f} %** "
              f"({'meets' if ok else 'misses'} the < 2 % target). A gap runs from a job's `finished_at` to the "
              "next job's `started_at` on the same worker (sidecar timestamps, ms resolution): the sidecar write, "
              "the result message, the parent's index write and dispatch, the queue, and the worker loading the "
              "next job's images. Worker start-up (loading the VGG) is before the first job and not counted.", ""]
    return "overhead: cpu", "\n".join(lines)


HEADER = """# Benchmarks

Produced by `benchmarks/throughput.py` (`--write-docs` rewrites the section of the device it ran
on and keeps the others). How batching, precision and the other speed options work:
docs/performance.md.

What is compared, on the same N jobs, in one process:

- **reference**: the usual way. One job at a time, fp32, `torch.optim.LBFGS` (history 100, no
  line search, tolerances off so it spends the whole budget), `.item()` on the loss every step,
  style Grams computed per job. Same objective and targets as the pipeline: `Objective` with the
  default Params (content conv4_2; style conv1_1 … conv5_1; content weight 1, style weight 50).
- **pipeline**: `stylize_batch` with the worker's batch size (1 on CPU; what fits on CUDA),
  `Precision.for_device` (bf16 autocast on CUDA with Grams and losses in fp32, fp32 on CPU),
  coarse-to-fine stages (`--multiscale`, default 2 on CPU, 1 on CUDA; the budget counts the
  evaluations of every stage), style targets through the cache.

Final losses of both are the fp32 objective on the clamped final image. If the pipeline's mean
is above 1.01 × the reference's at equal evaluations, the script raises the budget in 25 %
steps (up to 3×) until it is not; if it is at or below, it lowers the budget in 25 % steps
(down to 25 %) while it stays there. The speed-up at the smallest budget that matches the
reference's mean loss is the "at equal loss" figure; the verdict also gives the stricter
job-by-job reading (every job within 1 % of its own reference loss).

s/image = wall time / N (CPU s/image: process CPU time / N, less sensitive to other load on a
shared machine). Peak memory per image: CUDA max_memory_allocated over the phase divided by the
batch; CPU resident set peak over the phase (sampled every 10 ms) divided by the images in
flight. TFLOP/s = VGG convolution FLOPs of every evaluation / wall time. Content images are
centre-cropped square (so a GPU batch holds them all) unless `--keep-aspect`.

"""

PENDING_GPU = f"""## GPU (H100 / H200): pending

No GPU was available when this file was first written. Targets: 512 px, 300 evaluations,
≥ 10× the reference at equal or lower final loss (≤ 0.36 s per image on an H200). On a GPU
machine run:

    {GPU_COMMAND}

(N = 32 fills one batch; `--reference-jobs 8` times the reference, which runs one job at a
time, on 8 of the 32 jobs and compares final losses on those 8, to save device time; drop it
to run the reference on all 32.)
"""

_SECTION = re.compile(r"<!-- section: (?P<key>[^\n]+?) -->\n(?P<body>.*?)<!-- end section -->\n", re.S)


def write_docs(path: Path, key: str, body: str) -> None:
    """Replace (or add) one section of docs/benchmarks.md, keeping every other section as it is."""
    text = path.read_text() if path.exists() else ""
    sections = {m["key"]: m["body"] for m in _SECTION.finditer(text)}
    sections[key] = body.rstrip("\n") + "\n"
    if any(k.startswith("cuda:") for k in sections):
        sections.pop("gpu: pending", None)     # a real GPU section replaces the placeholder
    else:
        sections.setdefault("gpu: pending", PENDING_GPU)
    out = HEADER + "\n".join(f"<!-- section: {k} -->\n{v}<!-- end section -->\n" for k, v in sections.items())
    imaging.atomic_write_bytes(path, out.encode())


# ----------------------------------------------------------------------------- command line

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="benchmarks/throughput.py",
        description="Seconds per image of the naive reference (one job at a time, torch.optim.LBFGS, fp32) "
                    "and of the nst-batch pipeline on the same jobs, objective and evaluation budget.")
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N [default: auto]")
    ap.add_argument("--n", type=int, default=4, help="number of jobs [default: 4]")
    ap.add_argument("--size", type=int, default=None, help="long side in px [default: 128 on CPU, 512 on CUDA]")
    ap.add_argument("--evals", type=int, default=300, help="objective evaluations per job [default: 300]")
    ap.add_argument("--content", nargs="+", metavar="PATH", help="content images [default: scikit-image's "
                    + ", ".join(SAMPLE_CONTENT) + "]")
    ap.add_argument("--style", nargs="+", metavar="PATH", help="style images [default: scikit-image's "
                    + ", ".join(SAMPLE_STYLE) + "]")
    ap.add_argument("--keep-aspect", action="store_true", help="do not centre-crop contents to squares")
    ap.add_argument("--multiscale", type=int, default=None, help="pipeline stages [default: 2 on CPU, 1 on CUDA]")
    ap.add_argument("--tol", type=float, default=0.0, help="pipeline early stop per stage (Params.tol) [default: 0]")
    ap.add_argument("--batch-size", type=int, default=None, help="pipeline jobs per batch [default: auto, as the worker]")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"), help="pipeline precision [default: auto]")
    ap.add_argument("--compile", action="store_true", help="torch.compile the pipeline's network")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads [default: torch's]")
    ap.add_argument("--reference-jobs", type=int, default=None, help="run the reference on the first K jobs only "
                    "(s/image and losses compared on those) [default: all]")
    ap.add_argument("--no-interleave", action="store_true", help="on CPU (batch 1), run all reference jobs, "
                    "then all pipeline jobs, instead of alternating them job by job")
    ap.add_argument("--no-search", action="store_true", help="skip the search for the budget at equal loss "
                    "(raised in 25 %% steps while the pipeline's loss is higher, lowered while it is lower)")
    ap.add_argument("--search-max", type=float, default=3.0, help="largest budget factor searched [default: 3]")
    ap.add_argument("--write-docs", nargs="?", const=str(DOCS), default=None, metavar="PATH",
                    help=f"write the results into this markdown file [default path: {DOCS.relative_to(ROOT)}]")
    ap.add_argument("--json", metavar="PATH", help="also write the raw numbers as JSON")
    ap.add_argument("--overhead", action="store_true", help="measure scheduling overhead on a CPU manifest instead")
    ap.add_argument("--overhead-jobs", type=int, default=100, help="[default: 100]")
    ap.add_argument("--overhead-size", type=int, default=32, help="[default: 32]")
    ap.add_argument("--overhead-steps", type=int, default=10, help="[default: 10]")
    ap.add_argument("--overhead-workers", type=int, default=2, help="[default: 2]")
    args = ap.parse_args(argv)
    for name in ("n", "evals", "overhead_jobs", "overhead_steps", "overhead_workers"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    command = "python benchmarks/throughput.py " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.overhead:
        report = overhead(args)
        key, body = render_overhead(report, command)
    else:
        try:
            device = resolve_device(args.device)
            cuda = device.type == "cuda"
            args.size = args.size or (512 if cuda else 128)
            args.multiscale = args.multiscale or (1 if cuda else 2)
            report = benchmark(args, device)
        except NSTError as err:      # a bad image path, a size too small for the layers, ...
            raise SystemExit(f"error: {err}") from None
        key, body = render_throughput(report, command)
    print()
    print(body)
    if args.json:
        Path(args.json).write_text(json.dumps(_plain(report), indent=2, default=str))
    if args.write_docs:
        write_docs(Path(args.write_docs), key, body)
        say(f"wrote {args.write_docs}")
    return 0


def _plain(report: dict) -> dict:
    out = {}
    for k, v in report.items():
        if isinstance(v, argparse.Namespace):
            v = vars(v)
        elif k == "rows":
            v = [vars(r) for r in v]
        out[k] = v
    return out


if __name__ == "__main__":
    sys.exit(main())

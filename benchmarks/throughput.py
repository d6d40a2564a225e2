"""Throughput benchmark: the naive one-job-at-a-time reference against the batch pipeline.

Both variants optimize the same objective (pipeline.engine.objective.Objective with the project's
default Params: content conv4_2, style conv1_1..conv5_1) towards the same style targets
(style_grams), on the same N jobs, with the same evaluation budget, in one process:

- reference: what most implementations do. One job at a time, fp32, torch.optim.LBFGS
  (history 100, no line search, tolerances off so it uses the whole budget), a closure that
  calls `.item()` every step for logging, the style Grams computed per job.
- pipeline: optimize.stylize_batch with Precision.for_device (bf16 autocast on CUDA), jobs
  batched by the worker's own code (run.grouping.batch_key, run.footprint, run.targets:
  1 per batch on CPU, what fits on CUDA), coarse-to-fine stages (`--multiscale`).

Final losses are measured the same way for both: the fp32 objective on the clamped image.
When the pipeline's mean final loss is above 1.01 × the reference's, its budget is raised in
25 % steps until it gets there; when it is below, the budget is lowered while it stays there.
The time at the smallest budget that matches is the honest "time at equal loss". `--overhead`
runs a CPU manifest through `run_manifest` instead (overhead.py). Results: docs/benchmarks.md.

    .venv/bin/python benchmarks/throughput.py --device cpu --n 4 --size 128 --evals 300 --threads 1 --write-docs
    .venv/bin/python benchmarks/throughput.py --overhead --write-docs
"""
from __future__ import annotations

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:          # runnable from a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from benchmarks.measure import Phase, Row, eval_flops, pipeline_flops  # noqa: E402
from benchmarks.report import (LOSS_SLACK, _loadavg, device_name, render_overhead,  # noqa: E402,F401
                               render_throughput, say, write_docs)     # write_docs: tests use it from here
from pipeline import imaging  # noqa: E402
from pipeline.engine import pixels  # noqa: E402
from pipeline.engine.features import VGGFeatures  # noqa: E402
from pipeline.engine.objective import Objective, style_grams  # noqa: E402
from pipeline.engine.optimize import JobInput, Precision, Result, stylize_batch  # noqa: E402
from pipeline.errors import NSTError  # noqa: E402
from pipeline.params import Params  # noqa: E402
from pipeline.run.cache import StyleTargetCache, style_side  # noqa: E402
from pipeline.run.footprint import MAX_BATCH, fitting, free_device_memory, measure_footprint  # noqa: E402
from pipeline.run.grouping import batch_key  # noqa: E402
from pipeline.run.jobs import make_job  # noqa: E402
from pipeline.run.targets import targets_fn  # noqa: E402
from pipeline.run.worker import _compiled, resolve_device  # noqa: E402

DOCS = ROOT / "docs" / "benchmarks.md"
SAMPLE_CONTENT = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg")
SAMPLE_STYLE = ("hubble_deep_field.jpg", "ihc.png")

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


def run_pipeline(feats: VGGFeatures, jobs: Sequence[BenchJob], params: Params, precision: Precision,
                 batch: int, cache: StyleTargetCache, device: torch.device) -> tuple[list[Result], int]:
    """Run every job through stylize_batch, `batch` per call, grouped by the worker's batch key,
    with the worker's targets function; out of memory halves the batch, as the worker does.
    Returns the results and the batch size used."""
    results: dict[int, Result] = {}
    groups: dict[object, list[int]] = {}
    for i, job in enumerate(jobs):
        key = batch_key(make_job(job.content_path, [(job.style_path, 1.0)], params), tuple(job.content.shape[-2:]))
        groups.setdefault(key, []).append(i)
    for indices in groups.values():
        start = 0
        while start < len(indices):
            chunk = indices[start:start + batch]
            specs = [JobInput(jobs[i].content, targets_fn(feats, params, [(str(jobs[i].style_path), 1.0)],
                                                          str(jobs[i].content_path), jobs[i].content, cache),
                              params, progress=lambda p: None) for i in chunk]
            out = _batch_or_none(feats, specs, precision)
            if out is None:                    # out of memory: free outside the except, then halve
                del specs
                free_device_memory(device)
                if batch == 1:
                    raise SystemExit(f"error: out of memory at batch 1, size {params.size}; lower --size")
                batch = max(1, batch // 2)
                continue
            for i, result in zip(chunk, out):
                if isinstance(result, NSTError):
                    raise SystemExit(f"error: {jobs[i].name}: {result}")
                results[i] = result
            start += len(chunk)
    return [results[i] for i in range(len(jobs))], batch


def _batch_or_none(feats: VGGFeatures, specs: list[JobInput], precision: Precision) -> list | None:
    try:
        # progress_every as the worker uses it: losses are read back twice a second.
        return stylize_batch(feats, specs, precision, progress_every=0.5)
    except torch.cuda.OutOfMemoryError:
        return None


def auto_batch(feats: VGGFeatures, params: Params, shape: tuple[int, int], precision: Precision,
               device: torch.device, n: int) -> int:
    """As the worker sizes a batch: 1 on CPU; on CUDA what fits from a measured one-image footprint."""
    if device.type != "cuda":
        return 1
    h, w = pixels.scaled_size(*shape, params.size)
    return fitting(measure_footprint(feats, params, h, w, device, precision), device, min(MAX_BATCH, n))


# ----------------------------------------------------------------------------- one benchmark

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
        from benchmarks.overhead import overhead

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
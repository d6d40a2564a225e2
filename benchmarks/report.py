"""How the throughput benchmark reports: markdown tables, the verdict, docs/benchmarks.md sections.
Used by benchmarks/throughput.py."""
from __future__ import annotations

import os
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from pipeline import imaging
from pipeline.engine.features import LAYER_INDEX

from benchmarks.measure import eval_flops

LOSS_SLACK = 1.01            # the pipeline's mean final loss may be at most 1 % above the reference's
GPU_COMMAND = (".venv/bin/python benchmarks/throughput.py --device cuda --size 512 --evals 300 --n 32 "
               "--reference-jobs 8 --write-docs")


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

    def speed(row: Any, word: str = "") -> str:
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


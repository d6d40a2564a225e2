"""Scheduling overhead: a CPU manifest of tiny jobs through `run_manifest`, and the gaps between
each worker's jobs over its busy time. Used by `benchmarks/throughput.py --overhead`."""
from __future__ import annotations

import argparse
import io
import tempfile
import time
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.report import _loadavg, say


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


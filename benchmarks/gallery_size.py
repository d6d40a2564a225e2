"""The live page at 2,000 jobs: index.html's size, its write time, and Chromium's load time.

    PYTHONPATH=. python benchmarks/gallery_size.py [--jobs 2000] [--out /tmp/gallery-bench]

Builds a synthetic output folder the way a run leaves it (no VGG runs): a 10 × 10 × 20 grid
of content_weight × style_weight × seed over one content and one style, each job with a tiny
PNG output, a sidecar holding a 300-point loss history, and its index.sqlite row (ResultsIndex
upserts). Then it times `write_gallery` (first with the thumbnails made, then the rewrite a
live run repeats, thumbnails already there), and headless Chromium loading the page: the
navigation timing the page reports at its load event (parse, script, first layout), and the
wall time of a whole `chromium --dump-dom` less that of an empty page (start-up excluded).
Figures vary with the machine and its load; docs/running.md states one set and the machine.
"""
from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from PIL import Image

from pipeline.run.index import ResultsIndex
from pipeline.run.orchestrate import prepare
from pipeline.views.gallery import write_gallery

BROWSER = "/usr/bin/chromium"
PROBE = ('<script>window.addEventListener("load", function () { var n = performance.getEntriesByType('
         '"navigation")[0]; document.getElementById("nst-bench").textContent = JSON.stringify({dcl: '
         'n.domContentLoadedEventEnd, load: performance.now(), cards: document.querySelectorAll('
         '"#grid .card").length, shown: document.querySelectorAll("#grid .card:not([hidden])").length}); '
         '});</script><pre id="nst-bench"></pre></body>')


def build(root: Path, jobs: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (64, 48), (120, 90, 60)).save(root / "photo.png")
    Image.new("RGB", (40, 40), (20, 60, 200)).save(root / "wave.png")
    seeds = max(1, jobs // 100)
    manifest = root / "grid.yaml"
    manifest.write_text("version: 1\noutput: out\ncontent: [photo.png]\nstyle: [wave.png]\n"
                        "params: {size: 64, steps: 300}\n"
                        "grid: {content_weight: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], "
                        "style_weight: [10, 20, 30, 40, 50, 60, 70, 80, 90, 100], "
                        f"seed: {list(range(seeds))}}}\ndevices: cpu\n")
    m, all_jobs = prepare(manifest)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 120, 40)).save(buffer, format="PNG")
    png = buffer.getvalue()
    steps = list(range(1, 301))
    with ResultsIndex(m.output) as index:
        for n, job in enumerate(all_jobs[:jobs]):
            image = m.output / job.output
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(png)
            decay = [1.0 / (1 + 0.02 * s + 0.001 * n) for s in steps]
            history = {"step": steps, "stage": [0] * 150 + [1] * 150, "total": decay,
                       "content": [0.3 * v for v in decay], "style": [0.7 * v for v in decay]}
            record = {**job.describe(), "status": "done", "steps": 300, "seconds": 40.0 + n % 7,
                      "device": "cpu", "error": None, "width": 64, "height": 48,
                      "loss_total": decay[-1], "loss_content": 0.3 * decay[-1], "loss_style": 0.7 * decay[-1],
                      "loss_history": history}
            image.with_suffix(".json").write_text(json.dumps(record))
            index.upsert({k: v for k, v in record.items() if k != "loss_history"})
    return m.output


def chromium(page: str, profile: Path) -> tuple[float, str]:
    cmd = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={profile}", "--dump-dom", page]
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    return time.perf_counter() - start, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--out", type=Path, default=Path("/tmp/gallery-bench"))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    output = build(args.out, args.jobs)
    start = time.perf_counter()
    page = write_gallery(output)
    first = time.perf_counter() - start
    rewrites = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        write_gallery(output)
        rewrites.append(time.perf_counter() - start)
    text = page.read_text(encoding="utf-8")
    print(f"{args.jobs} jobs: index.html {page.stat().st_size / 1e6:.2f} MB "
          f"({len(re.findall('<svg', text))} inline SVGs); write {first:.2f} s with thumbnails, "
          f"rewrite {statistics.median(rewrites):.2f} s (median of {args.repeat})")
    if not Path(BROWSER).exists():
        print(f"no {BROWSER}: browser figures skipped")
        return
    probe = page.with_name("bench.html")
    probe.write_text(text.replace("</body>", PROBE, 1), encoding="utf-8")
    empty = page.with_name("empty.html")
    empty.write_text("<!DOCTYPE html><title>x</title><p>x</p>")
    walls, empties, timings = [], [], []
    for k in range(args.repeat):
        wall, dom = chromium(probe.resolve().as_uri(), args.out / f"profile-{k}")
        found = re.search(r'<pre id="nst-bench">(.*?)</pre>', dom, re.S)
        if found and found.group(1):
            timings.append(json.loads(found.group(1).replace("&quot;", '"')))
        walls.append(wall)
        empties.append(chromium(empty.resolve().as_uri(), args.out / f"profile-e{k}")[0])
    if timings:
        t = min(timings, key=lambda x: x["load"])
        print(f"chromium: DOMContentLoaded {t['dcl']:.0f} ms, load {t['load']:.0f} ms (best of "
              f"{len(timings)}); {t['cards']} cards in the DOM, {t['shown']} shown")
    print(f"chromium --dump-dom wall: {min(walls):.2f} s, empty page {min(empties):.2f} s "
          f"(difference {min(walls) - min(empties):.2f} s)")


if __name__ == "__main__":
    sys.exit(main())

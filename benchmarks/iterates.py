"""Saved-image loss, last-iterate loss and noise of finished results (docs/quality.md).

    python benchmarks/iterates.py OUTPUT [OUTPUT ...]

For every done job of each output folder: its `average`, the loss of the saved image
(`loss_total`), the loss of the last iterate (`loss_iterate`, or the last evaluation's loss in
`loss_history` for results made before it was recorded), both scores, and two measures of
high-frequency noise on the saved file's luminance in [0, 1]: the mean absolute 4-neighbour
Laplacian and the mean total variation per pixel (|dx| + |dy|). Sidecars are read, never written.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
from pathlib import Path

import numpy as np
from PIL import Image


def noise(path: Path) -> tuple[float, float]:
    grey = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    lap = (4 * grey[1:-1, 1:-1] - grey[:-2, 1:-1] - grey[2:, 1:-1] - grey[1:-1, :-2] - grey[1:-1, 2:])
    tv = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1, :]
    return float(np.abs(lap).mean()), float(tv.mean())


def rows(output: Path) -> list[dict]:
    conn = sqlite3.connect(f"file:{output / 'index.sqlite'}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    found = [dict(r) for r in conn.execute("SELECT * FROM jobs WHERE status = 'done' ORDER BY output")]
    conn.close()
    out = []
    for r in found:
        image = output / r["output"]
        side = json.loads(image.with_suffix(".json").read_text())
        iterate = (side.get("loss_iterate") or {}).get("total")
        if iterate is None:
            iterate = (side.get("loss_history") or {}).get("total", [None])[-1]
        params = side.get("params") or {}
        lap, tv = noise(image)
        out.append({"output": f"{output.name}/{r['output']}", "average": params.get("average", 0.0) or 0.0,
                    "saved": side["loss_total"], "iterate": iterate, "style_distance": side.get("style_distance"),
                    "content_distance": side.get("content_distance"), "laplacian": lap, "tv": tv})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("outputs", nargs="+", type=Path)
    args = parser.parse_args()
    fmt = lambda v: "—" if v is None else f"{v:.4g}"  # noqa: E731
    print("| result | average | saved-image loss | last-iterate loss | style_distance | content_distance "
          "| mean abs Laplacian | TV per pixel |")
    print("|---|---|---|---|---|---|---|---|")
    for output in args.outputs:
        for r in rows(output):
            print(f"| {r['output']} | {r['average']:g} | {fmt(r['saved'])} | {fmt(r['iterate'])} | "
                  f"{fmt(r['style_distance'])} | {fmt(r['content_distance'])} | {r['laplacian']:.4f} | {r['tv']:.4f} |")


if __name__ == "__main__":
    main()

"""Cost of the exact tiled objective: CPU time per evaluation, whole image against tiles.

One evaluation (loss and gradient, default layers, fp32) of a random image at `--size`,
whole and in tiles of each `--tiles` size, `--repeat` times each after one warm-up; reports
process CPU seconds per evaluation (robust on a shared machine), the pixels the network sees
per pass relative to the image (the halo overhead) and the relative gradient difference.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/tiling.py --size 512 --tiles 128 256
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from pipeline.engine import tiled  # noqa: E402
from pipeline.engine.features import VGGFeatures  # noqa: E402
from pipeline.engine.objective import style_grams  # noqa: E402
from pipeline.params import Params  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--tiles", type=int, nargs="+", default=[128, 256])
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    p = Params(size=args.size)
    layers = [*p.style_layers, *p.content_layers]
    feats = VGGFeatures(layers=layers)
    gen = torch.Generator().manual_seed(0)
    h, w = args.size * 3 // 4, args.size
    content = torch.rand(1, 3, h, w, generator=gen)
    images = (content + 0.1 * torch.randn(content.shape, generator=gen)).clamp(0, 1)
    targets = style_grams(feats, torch.rand(1, 3, 256, 256, generator=gen), p.style_layers)
    rows, reference = [], None
    for tile in [None, *args.tiles]:
        objective = tiled.make_objective(feats, content, [targets], [p], tile)
        objective.value_and_grad(images)           # warm-up
        c0 = time.process_time()
        for _ in range(args.repeat):
            _, _, grad = objective.value_and_grad(images)
        cpu = (time.process_time() - c0) / args.repeat
        seen = 1.0 if tile is None else sum((t.crop[1] - t.crop[0]) * (t.crop[3] - t.crop[2])
                                            for t in tiled.split(h, w, tile, layers)) / (h * w)
        reference = grad if reference is None else reference
        rows.append({"tile": tile, "cpu_s_per_eval": round(cpu, 2), "pixels_seen_per_pass": round(seen, 2),
                     "grad_rel_diff": float((grad - reference).norm() / reference.norm())})
        print(json.dumps(rows[-1]), flush=True)


if __name__ == "__main__":
    main()

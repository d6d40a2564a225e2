"""The default coarse-to-fine schedule against the single-scale fp32 L-BFGS reference.

Both optimize the same objective (`Objective`, default Params) at the same final size, fp32,
on CPU, one job, in one process:

- reference: `multiscale: 1`, the default budget (400 evaluations) at the final size;
- pipeline: the default settings (`multiscale: auto`, the same 400 evaluations split over the
  stages, most of them at the cheap sizes).

The figure is the time at which the pipeline first reaches the reference's final loss: every
evaluation's loss and the elapsed wall and process CPU time are recorded through the progress
callback, and the first final-stage evaluation whose loss is at or below the reference's last
one is the crossing (both are losses of the unclamped iterate, as the optimizer sees them).
Both final images are written with a side-by-side sheet. `--budgets 0.5 0.75 1.0` also runs
the default schedule with those fractions of the evaluations and records the loss of the image
each saves (clamped to [0, 1]) and its CPU time: that brackets the crossing on the saved image.

    PYTHONPATH=. OMP_NUM_THREADS=1 .venv/bin/python benchmarks/schedule.py --sizes 256 512 \
        --budgets 0.5 0.75 1.0 --content C.jpg --style S.jpg --out /tmp/schedule
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from pipeline import imaging  # noqa: E402
from pipeline.engine import pixels  # noqa: E402
from pipeline.engine.features import VGGFeatures  # noqa: E402
from pipeline.engine.objective import style_grams  # noqa: E402
from pipeline.engine.optimize import JobInput, Progress, stylize_batch  # noqa: E402
from pipeline.params import Params  # noqa: E402
from pipeline.run.cache import style_side  # noqa: E402


def run(feats: VGGFeatures, content: torch.Tensor, style: torch.Tensor, params: Params) -> dict:
    """One job; returns its per-evaluation (stage, loss, wall s, CPU s) and the result."""
    grams: dict[int, dict[str, torch.Tensor]] = {}

    def targets(side: int) -> dict[str, torch.Tensor]:
        if side not in grams:
            grams[side] = style_grams(feats, pixels.resize_long_side(style, style_side(params, side)),
                                      params.style_layers)
        return grams[side]

    trace: list[tuple[int, float, float, float]] = []
    t0, c0 = time.perf_counter(), time.process_time()

    def progress(p: Progress) -> None:
        trace.append((p.stage, p.losses["total"], time.perf_counter() - t0, time.process_time() - c0))

    result = stylize_batch(feats, [JobInput(content, targets, params, progress=progress)], progress_every=0.0)[0]
    return {"trace": trace, "result": result, "wall": time.perf_counter() - t0, "cpu": time.process_time() - c0,
            "stages": params.stages, "steps": params.stage_steps()}


def crossing(trace: list, last_stage: int, target: float) -> tuple[int, float, float] | None:
    for i, (stage, loss, wall, cpu) in enumerate(trace):
        if stage == last_stage and loss <= target:
            return i + 1, wall, cpu
    return None


def sheet(images: list[tuple[str, torch.Tensor]], path: Path) -> None:
    pil = [imaging.to_pil(t) for _, t in images]
    w, h = sum(p.width for p in pil) + 10 * (len(pil) - 1), max(p.height for p in pil) + 24
    out = Image.new("RGB", (w, h), "white")
    draw, x = ImageDraw.Draw(out), 0
    for (label, _), p in zip(images, pil):
        out.paste(p, (x, 24))
        draw.text((x + 4, 6), label, fill="black")
        x += p.width + 10
    out.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    ap.add_argument("--content", type=Path, required=True)
    ap.add_argument("--style", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=Params().steps, help="evaluations [default: the default, 400]")
    ap.add_argument("--budgets", type=float, nargs="+", default=[1.0],
                    help="also run the pipeline with these fractions of --steps (to bracket the crossing on the "
                         "saved image's loss) [default: 1.0]")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    feats = VGGFeatures()
    content, style = imaging.read_image(args.content), imaging.read_image(args.style)
    rows = []
    for size in args.sizes:
        base = Params(size=size, steps=args.steps)
        c = pixels.resize_long_side(content, size)
        ref = run(feats, c, style, base.replace(multiscale=1))
        pipe = run(feats, c, style, base)
        target = ref["trace"][-1][1]
        cross = crossing(pipe["trace"], pipe["stages"] - 1, target)
        row = {"size": size, "ref_wall": ref["wall"], "ref_cpu": ref["cpu"], "ref_loss": target,
               "ref_final": ref["result"].losses["total"], "pipe_wall": pipe["wall"], "pipe_cpu": pipe["cpu"],
               "pipe_loss": pipe["trace"][-1][1], "pipe_final": pipe["result"].losses["total"],
               "pipe_steps": pipe["steps"], "cross": cross, "budgets": []}
        # Smaller budgets of the same default schedule: the saved image's loss and the time it took,
        # so the crossing on the saved (clamped) image is bracketed by measurement, not interpolated.
        for fraction in sorted(f for f in args.budgets if f != 1.0):
            part = run(feats, c, style, base.replace(steps=max(1, round(args.steps * fraction))))
            row["budgets"].append({"fraction": fraction, "steps": part["steps"], "wall": part["wall"],
                                   "cpu": part["cpu"], "final": part["result"].losses["total"]})
            print(json.dumps({"size": size, **row["budgets"][-1]}), flush=True)
        rows.append(row)
        print(json.dumps(row), flush=True)
        for name, r in (("reference", ref), ("pipeline", pipe)):
            imaging.save_image(r["result"].image, args.out / f"{name}_{size}.png")
        sheet([(f"reference, 1 stage, {args.steps} evals, loss {row['ref_final']:.3g}", ref["result"].image),
               (f"default (auto {pipe['steps']}), loss {row['pipe_final']:.3g}", pipe["result"].image)],
              args.out / f"sheet_{size}.png")
    info = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__, "load": os.getloadavg(), "rows": rows}
    (args.out / "schedule.json").write_text(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()

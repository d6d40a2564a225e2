"""Measure temporal error and style loss against temporal_weight on the clip demo's pan.

    python benchmarks/temporal_sweep.py --size 80 --frames 5 --pan 6 --steps 40 --weights 0,100,1000,10000

The clip: a 320 × 240 window panning `--pan` px per frame across scikit-image's coffee.png
(pipeline/video_demo.py's `pan`), as an mp4; the style: scikit-image's ihc.png.

All weights run as one batch of clip jobs on one device (frame t of every job at once), at
equal evaluations per frame. Prints one line per weight: mean temporal error (masked squared
difference to the previous output frame warped by the flow), its reduction against weight 0,
and the mean style and content loss per frame relative to weight 0. docs/video.md quotes it.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline.params import params_from_mapping
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import make_job
from pipeline.run.worker import JobRunner, resolve_device
from pipeline.video import Clip, write_mp4
from pipeline.video_demo import materialize, pan


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=80)
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--pan", type=int, default=6, help="pixels per frame in the 320 px wide source")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--style-weight", type=float, default=20.0)
    ap.add_argument("--weights", default="0,100,1000,10000")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    weights = [float(w) for w in args.weights.split(",")]
    work = Path(tempfile.mkdtemp(prefix="nst-temporal-"))
    inputs = materialize(work)                      # the style image (and the demo's own clip)
    import skimage.data
    from PIL import Image

    with Image.open(Path(skimage.data.__file__).parent / "coffee.png") as img:
        photo = np.asarray(img.convert("RGB"))
    write_mp4(pan(photo, args.frames, args.pan), work / "pan.mp4", fps=12.0)
    clip = Clip("video", str(work / "pan.mp4"))
    runner = JobRunner(resolve_device(args.device), StyleTargetCache(work / "cache"), batch_size=len(weights))
    jobs = {w: make_job(clip.path, [(inputs / "ihc.png", 1.0)],
                        params_from_mapping({"size": args.size, "steps": args.steps,
                                             "style_weight": args.style_weight, "temporal_weight": w}), clip=clip)
            for w in weights}
    events: list = []
    runner.run_group(list(jobs.values()), work / "out", events.append)   # one batch, as a worker runs it
    by_id = {e[1]: e[2].as_dict() for e in events if e[0] == "record"}
    records = {w: by_id[job.job_id] for w, job in jobs.items()}
    base = records[weights[0]]
    print(f"clip: {args.frames} frames panning {args.pan} px (of 320) at {args.size} px, {args.steps} steps per frame "
          f"(outputs in {work / 'out'})")
    for w in weights:
        r = records[w]
        if r["status"] != "done":
            print(f"temporal_weight {w:g}: failed: {r['error']}")
            continue
        print(f"temporal_weight {w:>7g}: temporal error {r['temporal_error']:.5f} "
              f"({base['temporal_error'] / r['temporal_error']:.1f}× lower than {weights[0]:g}), "
              f"style loss {r['loss_style']:.4f} ({r['loss_style'] / base['loss_style']:.2f}×), "
              f"content loss {r['loss_content']:.4f} ({r['loss_content'] / base['loss_content']:.2f}×)")


if __name__ == "__main__":
    torch.manual_seed(0)
    main()

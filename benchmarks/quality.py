"""The style-loss comparison of docs/quality.md: photos × paintings × losses × averaging.

    python benchmarks/quality.py --images /work/shared/images --out out/quality \
        --photos 4 --paintings 4 --size 512 --steps 200 [--pairing zip] \
        [--photo-names a.jpg ...] [--painting-names b.jpg ...] \
        [--losses gram meancov sliced] [--average 0 0.99] [--workers 2]

It writes a manifest (every photo × every painting, or with `--pairing zip` the i-th photo with
the i-th painting; a grid over `style_loss` and `average`, equal evaluations), runs it with
`nst-batch run` (resumable: rerun to finish), draws one contact sheet per loss (product: rows
photo, cols painting, one sheet per averaging; zip: rows photo, cols averaging) and prints a
Markdown table: per loss and
averaging, the mean `style_distance` and `content_distance` of the results (the scores every
result carries, docs/quality.md) and the mean saved-image and last-iterate losses. It then
measures the CPU time of one objective evaluation (loss and gradient) per loss at `--size`,
single-threaded, on the first photo and painting (`--timing-evals` evaluations after one
warm-up), in this process.
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
EXTENSIONS = (".jpg", ".jpeg", ".png")


def _images(folder: Path, count: int, names: list[str] | None) -> list[Path]:
    if names:
        return [folder / n for n in names]
    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in EXTENSIONS)
    return found[:count]


def write_manifest(args: argparse.Namespace, photos: list[Path], paintings: list[Path]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    manifest = {
        "version": 1, "output": str(args.out.resolve() / "results"),
        "content": [str(p) for p in photos], "style": [str(p) for p in paintings],
        "pairing": args.pairing,
        "params": {"size": args.size, "steps": args.steps},
        "grid": {"style_loss": list(args.losses), "average": [float(a) for a in args.average]},
        "devices": "cpu",
    }
    path = args.out / "quality.yaml"
    path.write_text(json.dumps(manifest, indent=2))   # JSON is YAML
    return path


def table(output: Path) -> str:
    conn = sqlite3.connect(output / "index.sqlite")
    conn.row_factory = sqlite3.Row
    rows = [dict(r) for r in conn.execute("SELECT * FROM jobs WHERE status = 'done'")]
    conn.close()
    groups: dict[tuple[str, float], list[dict]] = {}
    for r in rows:
        params = json.loads(r["params"])
        groups.setdefault((params.get("style_loss", "gram"), float(params.get("average") or 0.0)), []).append(r)
    lines = ["| style_loss | average | jobs | style_distance | content_distance | saved-image loss | "
             "last-iterate loss | s per job (wall) |", "|---|---|---|---|---|---|---|---|"]
    for (loss, average), items in sorted(groups.items()):
        iterate = []
        for r in items:
            sidecar = output / Path(r["output"]).with_suffix(".json")
            data = json.loads(sidecar.read_text()) if sidecar.exists() else {}
            if (data.get("loss_iterate") or {}).get("total") is not None:
                iterate.append(data["loss_iterate"]["total"])

        def mean(key: str) -> str:
            values = [r[key] for r in items if r.get(key) is not None]
            return f"{statistics.fmean(values):.4g}" if values else "—"
        last = f"{statistics.fmean(iterate):.4g}" if iterate else "—"
        lines.append(f"| {loss} | {average:g} | {len(items)} | {mean('style_distance')} | {mean('content_distance')} | "
                     f"{mean('loss_total')} | {last} | {mean('seconds')} |")
    return "\n".join(lines)


def cpu_per_evaluation(photo: Path, painting: Path, size: int, losses: list[str], evals: int) -> dict[str, float]:
    import torch

    from pipeline import imaging
    from pipeline.engine import pixels, style_loss
    from pipeline.engine.features import VGGFeatures
    from pipeline.engine.objective import Objective
    from pipeline.params import Params

    torch.set_num_threads(1)
    feats = VGGFeatures()
    content = pixels.resize_long_side(imaging.read_image(photo, long_side_hint=size), size)
    style = pixels.resize_long_side(imaging.read_image(painting, long_side_hint=size), size)
    out = {}
    for loss in losses:
        p = Params(size=size, style_loss=loss)
        targets = style_loss.style_targets(feats, style, p.style_layers, loss)
        with torch.no_grad():
            content_targets = feats(content, list(p.content_layers))
        objective = Objective(feats, content_targets, [targets], [p])
        objective.value_and_grad(content)           # warm-up
        start = time.process_time()
        for _ in range(evals):
            objective.value_and_grad(content)
        out[loss] = (time.process_time() - start) / evals
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, required=True, help="folder with content/ and style/")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "quality")
    parser.add_argument("--photos", type=int, default=4, help="the first N of content/ (by name)")
    parser.add_argument("--paintings", type=int, default=4, help="the first N of style/ (by name)")
    parser.add_argument("--photo-names", nargs="+", help="these files of content/ instead")
    parser.add_argument("--painting-names", nargs="+", help="these files of style/ instead")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--pairing", choices=["product", "zip"], default="product")
    parser.add_argument("--losses", nargs="+", default=["gram", "meancov", "sliced"])
    parser.add_argument("--average", nargs="+", type=float, default=[0.0, 0.99])
    parser.add_argument("--timing-evals", type=int, default=5)
    parser.add_argument("--workers", type=int, help="passed to `nst-batch run --workers`")
    parser.add_argument("--skip-run", action="store_true", help="only the table, sheets and timing")
    args = parser.parse_args()
    # The manifest is written into --out, and its paths are relative to it: make them absolute.
    args.images, args.out = args.images.resolve(), args.out.resolve()
    photos = _images(args.images / "content", args.photos, args.photo_names)
    paintings = _images(args.images / "style", args.paintings, args.painting_names)
    manifest = write_manifest(args, photos, paintings)
    cli = [sys.executable, str(ROOT / "nst_batch.py")]
    if not args.skip_run:
        workers = ["--workers", str(args.workers)] if args.workers else []
        subprocess.run([*cli, "run", str(manifest), *workers], check=False)
    output = args.out / "results"
    if not (output / "index.sqlite").exists():
        sys.exit(f"error: {output / 'index.sqlite'}: no results (the run above says why)")
    for loss in args.losses:
        if args.pairing == "zip":
            subprocess.run([*cli, "sheet", str(manifest), "--rows", "content", "--cols", "average",
                            "--where", f"style_loss={loss}", "--thumb", "256",
                            "--out", str(args.out / f"sheet_{loss}.jpg")], check=False)
            continue
        for average in args.average:
            sheet = args.out / f"sheet_{loss}_avg{average:g}.jpg"
            subprocess.run([*cli, "sheet", str(manifest), "--rows", "content", "--cols", "style",
                            "--where", f"style_loss={loss}", "--where", f"average={average:g}",
                            "--thumb", "192", "--out", str(sheet)], check=False)
    print(table(output))
    timing = cpu_per_evaluation(photos[0], paintings[0], args.size, list(args.losses), args.timing_evals)
    print("\nCPU s per evaluation (loss + gradient, one thread, %d px):" % args.size)
    for loss, seconds in timing.items():
        print(f"  {loss}: {seconds:.2f}")


if __name__ == "__main__":
    main()

"""`nst-batch stylize`: one content image, one or more style images, one output file."""
from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from .cache import StyleTargetCache
from .devices import check_devices
from ..errors import InputError, OutputError, ParamError
from ..engine.weights import weights_id
from ..views.eta import EtaModel, format_eta
from .grouping import job_stages
from ..imaging import read_image
from .jobs import RegionSpec, make_job
from .region_checks import mask_problems
from ..params import params_from_mapping
from ..views.console import make_console


def _format_for(output: Path) -> str:
    suffix = output.suffix.lower()
    if suffix == ".png":
        return "png"
    if suffix in (".jpg", ".jpeg"):
        return "jpeg"
    if suffix in (".tif", ".tiff"):
        return "tiff"
    raise OutputError(f"output {output} must end in .png, .jpg, .jpeg, .tif or .tiff")


def _is_an_input(output: Path, inputs: list[Path]) -> bool:
    """Whether writing `output` would replace an input file.

    Paths are compared resolved, and, when the output exists, as files (device and inode): a
    bind mount, a hard link or a case-insensitive file system names one file by two paths."""
    if output.resolve() in {Path(p).resolve() for p in inputs}:
        return True
    try:
        return output.exists() and any(os.path.samefile(output, p) for p in inputs)
    except OSError:   # an input vanished meanwhile: reading it fails with its own message later
        return False


def stylize_one(content: Path, styles: list[Path], output: Path, values: dict[str, Any],
                blend: list[float] | None, device: str, cache_dir: Path | None,
                use_cache: bool, show_progress: bool, memory_limit: int | None = None,
                save_every: int = 0, regions: list[RegionSpec] | None = None) -> dict[str, Any]:
    check_devices(device, "--device")   # before any input is read or network loaded
    regions = regions or []
    if bool(styles) == bool(regions):
        raise ParamError("give one or more style images, or --region MASK=STYLE (each region names its style), "
                         "not both" if styles else "give one or more style images, or --region MASK=STYLE")
    values = {**values, "format": _format_for(output)}
    params = params_from_mapping(values)
    if blend is not None and len(blend) != len(styles):
        raise ParamError(f"--style-blend has {len(blend)} weights for {len(styles)} style images; give one each")
    if blend is not None and not (all(math.isfinite(w) and w >= 0 for w in blend) and sum(blend) > 0):
        raise ParamError("--style-blend weights must be finite, ≥ 0 and have a positive sum")
    for problem in mask_problems(str(content), regions):   # masks: one line, before torch (read_image loads it)
        if problem.fails:
            raise InputError(f"--region {problem.region}: {problem.message}")
        print(f"warning: --region {problem.region}: {problem.message}", file=sys.stderr)
    # Fail on unreadable inputs and unknown weights before any network is loaded.
    inputs = [content, *styles, *(Path(s.path) for r in regions for s in r.styles)] + \
        ([Path(params.init)] if params.init not in ("content", "noise") else [])
    for path in inputs:
        read_image(path, long_side_hint=64)
    weights_id(params.weights)
    if _is_an_input(output, inputs):   # an --init image is an input too
        raise InputError(f"output {output} is one of the inputs; inputs are never overwritten — choose another name")
    # Only now load torch (seconds): every mistake above was reported without it.
    from .worker import JobRunner, resolve_device

    job = make_job(content, [(s, w) for s, w in zip(styles, blend or [1.0] * len(styles))], params, regions=regions)
    runner = JobRunner(resolve_device(device), StyleTargetCache(cache_dir, enabled=use_cache),
                       memory_limit=memory_limit, save_every=save_every)
    console = make_console(stderr=True)
    start = time.perf_counter()
    if not show_progress:
        record = runner.run(job, output, None)
    else:
        # The same measured ETA as `run` (views/eta.py): pixel-evaluations per second so far.
        eta = EtaModel()
        eta.add(job.job_id, job_stages(job))
        eta.started(0, job.job_id)
        columns = [TextColumn("[bold]stylize"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[loss]}"), TextColumn("{task.fields[rate]}"),
                   TimeElapsedColumn(), TextColumn("{task.fields[eta]}")]
        with Progress(*columns, console=console, transient=False) as bar:
            task = bar.add_task("stylize", total=params.steps, loss="loss –", rate="", eta=format_eta(None))

            def on_progress(p) -> None:
                eta.progress(job.job_id, p.step, p.total)
                bar.update(task, completed=p.step, total=p.total, loss=f"loss {p.losses['total']:.4g}",
                           rate=f"{p.step / max(p.elapsed, 1e-9):.2f} step/s",
                           eta=format_eta(eta.seconds_left(), time.time()))

            record = runner.run(job, output, None, progress=on_progress)
    for note in record.get("memory_plan", {}).get("notes", []):
        console.print(f"memory plan: {note}", soft_wrap=True, markup=False, highlight=False)
    console.print(f"wrote {output} ({record['width']}×{record['height']}, {record['steps']} steps, "
                  f"loss {record['loss_total']:.4g}, {time.perf_counter() - start:.1f}s on {record['device']})",
                  # One line however narrow the terminal (or log file); a path is not markup.
                  soft_wrap=True, markup=False, highlight=False)
    return record

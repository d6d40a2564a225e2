"""Expand a validated Manifest into jobs: pairing × grid, in a fixed order, without duplicates.

Order: content-style pairs in pairing order (product: for each content image, every style),
and within a pair every grid combination, the first grid key varying slowest; then each photo
with regions (manifest/regions.py), in manifest order, with every grid combination (its region
keys `regions.NAME.FIELD` included: they change only the photos that have region NAME). A job that
equals an earlier one (same id: same image bytes and resolved parameters) is dropped.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import asdict
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import yaml

from ..errors import ManifestError
from ..run.jobs import Job, make_job
from ..run.naming import name_jobs
from ..params import Params, params_from_mapping
from .regions import apply, entry_doc, is_region_key, plain_value

if TYPE_CHECKING:
    from .schema import Manifest, StyleEntry

Grid = Sequence[tuple[str, Sequence[Any]]]


def grid_size(grid: Grid) -> int:
    """How many parameter combinations a grid makes (1 for no grid)."""
    return math.prod(len(values) for _, values in grid)


def grid_combinations(grid: Grid) -> Iterator[dict[str, Any]]:
    """Every combination of the grid's values, the first key varying slowest."""
    keys = [key for key, _ in grid]
    for values in itertools.product(*(values for _, values in grid)):
        yield dict(zip(keys, values))


def zip_mismatch(n_content: int, n_styles: int) -> str:
    return (f"zip pairs the i-th content image with the i-th style, but content has {n_content} "
            f"image(s) and style has {n_styles} style(s); make them equal or use pairing: product")


def pairings(manifest: Manifest) -> list[tuple[str, StyleEntry]]:
    """The (content image, style) pairs of the manifest, in order."""
    if manifest.pairing == "explicit":
        return list(manifest.pairs)
    if manifest.pairing == "zip":
        if len(manifest.content) != len(manifest.styles):
            raise ManifestError(str(manifest.source), [
                "pairing: " + zip_mismatch(len(manifest.content), len(manifest.styles))])
        return list(zip(manifest.content, manifest.styles))
    return [(content, style) for content in manifest.content for style in manifest.styles]


def job_params(manifest: Manifest) -> list[Params]:
    """The resolved Params of every grid combination over the manifest's params (region keys
    left out: they do not change a job without regions)."""
    grid = [(k, v) for k, v in manifest.grid if not is_region_key(k)]
    return [params_from_mapping({**manifest.params, **combo}) for combo in grid_combinations(grid)]


def _region_jobs(manifest: Manifest) -> Iterator[Job]:
    if not manifest.region_entries:
        return
    combos = list(grid_combinations(manifest.grid))
    params = [params_from_mapping({**manifest.params, **{k: v for k, v in c.items() if not is_region_key(k)}})
              for c in combos]
    for entry in manifest.region_entries:
        for combo, job_params_ in zip(combos, params):
            regions = apply(entry, {k: v for k, v in combo.items() if is_region_key(k)})
            yield make_job(entry.content, [], job_params_, entry.clip, regions=regions)


def expand(manifest: Manifest) -> list[Job]:
    """Every job of the manifest, in a deterministic order, duplicates removed (first kept)."""
    all_params = job_params(manifest)
    jobs: dict[str, Job] = {}
    for content, style in pairings(manifest):
        for params in all_params:
            job = make_job(content, style.refs, params, manifest.clips.get(content))
            jobs.setdefault(job.job_id, job)
    for job in _region_jobs(manifest):
        jobs.setdefault(job.job_id, job)
    return name_jobs(list(jobs.values()), [k for k, _ in manifest.grid], manifest.output_name,
                     str(manifest.source))


def _style_doc(style: StyleEntry) -> dict[str, Any]:
    return {"label": style.label, "images": list(style.images), "weights": list(style.weights)}


def _plain(value: Any) -> Any:
    return [_plain(v) for v in value] if isinstance(value, (list, tuple)) else value


def resolved_yaml(manifest: Manifest, jobs: list[Job] | None = None) -> str:
    """The manifest with every path absolute and every job's parameters spelled out.

    Written to `<output>/manifest.resolved.yaml` as a record of what a run meant; it is not
    itself a manifest (edit the original instead)."""
    jobs = expand(manifest) if jobs is None else jobs
    doc: dict[str, Any] = {
        "version": 1,
        "source": str(manifest.source),
        "output": str(manifest.output),
        "pairing": manifest.pairing,
        "content": list(manifest.content),
        "style": [_style_doc(s) for s in manifest.styles],
    }
    if manifest.region_entries:
        doc["regions"] = [entry_doc(e) for e in manifest.region_entries]
    if manifest.pairing == "explicit":
        doc["pairs"] = [{"content": c, "style": _style_doc(s)} for c, s in manifest.pairs]
    doc.update({
        "params": {k: _plain(v) for k, v in manifest.params.items()},
        "grid": {k: [plain_value(x) for x in v] if is_region_key(k) else _plain(v) for k, v in manifest.grid},
        "devices": manifest.devices if isinstance(manifest.devices, str) else list(manifest.devices),
        "workers_per_device": manifest.workers_per_device,
        "retries": manifest.retries,
        "timeout": manifest.timeout,
        "sheet": asdict(manifest.sheet) if manifest.sheet else None,
        "output_name": manifest.output_name,
        "jobs": [job.describe() for job in jobs],
    })
    header = ("# Written by nst-batch: the manifest with every path resolved and every job's\n"
              "# parameters spelled out. A record of the run, not an input: edit the original.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)

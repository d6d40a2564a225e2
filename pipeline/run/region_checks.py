"""Checks of region masks that need their pixels (torch-free: `validate`, `run` and `stylize`).

A mask whose aspect ratio differs from its photo's, an unreadable mask, a label map with a
colour the legend lacks: the jobs of that photo fail (one line each, the rest of the batch
runs). An empty mask, or a legend colour the map does not use: a warning, and the region is
ignored. Same aspect ratio but another size is fine: the engine resizes the mask and notes it.
"""
from __future__ import annotations

from pathlib import Path

from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable

from ..errors import InputError
from ..imaging import image_shape
from ..masks import aspect_problem, is_empty, label_masks, read_mask
from ..manifest.yaml_reader import _format
from .jobs import RegionSpec

if TYPE_CHECKING:
    from ..manifest.schema import Manifest


@dataclass(frozen=True)
class MaskProblem:
    region: str     # the region's name
    fails: bool     # True: the jobs fail; False: the region is ignored (an empty mask)
    message: str


def mask_problems(content: str, regions: Iterable[RegionSpec]) -> list[MaskProblem]:
    """What is wrong with the masks of one photo's regions (and their styles' masks)."""
    regions = list(regions)
    shape = image_shape(content)
    problems: list[MaskProblem] = []
    legend = {r.name: r.colour for r in regions if r.labels and r.colour}
    labels = next((r.labels for r in regions if r.labels), None)
    weights = {}
    if labels is not None and shape is not None:
        try:
            maps, _ = label_masks(labels, legend)
            weights = {name: m for name, m in maps.items()}
            problem = aspect_problem(next(iter(maps.values())).shape, shape) if maps else None
            if problem:
                return [MaskProblem(r.name, True, f"label map {labels} {problem}") for r in regions[:1]]
        except InputError as err:
            return [MaskProblem(regions[0].name, True, str(err))]
    for region in regions:
        if region.mask is not None and Path(region.mask).is_dir():
            continue   # a clip's mask per frame: the worker checks them against the frames
        if region.mask is not None and shape is not None:
            try:
                weights[region.name], _ = read_mask(region.mask)
            except InputError as err:
                problems.append(MaskProblem(region.name, True, str(err)))
                continue
            problem = aspect_problem(weights[region.name].shape, shape)
            if problem:
                problems.append(MaskProblem(region.name, True, f"mask {region.mask} {problem}"))
                continue
        if region.name in weights and is_empty(weights[region.name]):
            what = f"mask {region.mask}" if region.mask else f"colour #{'%02x%02x%02x' % region.colour} of {labels}"
            problems.append(MaskProblem(region.name, False, f"{what} is empty (covers nothing): region "
                                                            f"{region.name} is ignored; paint the region or remove it"))
        for style in region.styles:
            if style.mask is None:
                continue
            try:
                style_weights, _ = read_mask(style.mask)
                style_shape = image_shape(style.path)
                problem = style_shape and aspect_problem(style_weights.shape, style_shape)
            except InputError as err:
                problems.append(MaskProblem(region.name, True, str(err)))
                continue
            if problem:
                problems.append(MaskProblem(region.name, True, f"style mask {style.mask} {problem} (its style {style.path})"))
            elif is_empty(style_weights):
                problems.append(MaskProblem(region.name, True, f"style mask {style.mask} is empty (covers nothing of "
                                                               f"{style.path}); paint the part of the painting to use"))
    return problems


def region_problems(manifest: Manifest) -> tuple[list[str], list[str]]:
    """(lines of masks that fail their jobs, lines of regions ignored for an empty mask), each
    naming the manifest, the region's key and its line."""
    failing: list[str] = []
    ignored: list[str] = []
    for entry in manifest.region_entries:
        for problem in mask_problems(entry.content, entry.regions):
            key, line = entry.lines.get(problem.region, ((), 0))
            message = problem.message + ("; the photo's jobs will fail" if problem.fails else "")
            (failing if problem.fails else ignored).append(f"{manifest.source.name}: {_format(key, message, line, None)}")
    return list(dict.fromkeys(failing)), list(dict.fromkeys(ignored))

"""A job's style targets as a function of the stage size, through the style-target cache.

The engine asks `targets(long_side)` once per coarse-to-fine stage; each style image is read
(and colour-converted for `preserve_color`) at most once per job, and only on a cache miss.
An unreadable style raises InputError from that call, which the engine turns into a failure
of this job alone. Shared by the worker and benchmarks/throughput.py.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import imaging
from ..engine import pixels, style_loss
from ..engine.features import VGGFeatures
from ..engine.optimize import StyleTargetsFn
from ..engine.tiled import tiled_targets
from ..params import Params
from .cache import StyleTargetCache, key_for, style_read_hint  # noqa: F401 - style_read_hint: re-exported


def targets_fn(feats: VGGFeatures, params: Params, styles: Sequence[tuple[str, float]], content_path: str,
               content: torch.Tensor, cache: StyleTargetCache, hits: list[bool] | None = None,
               read: Callable[..., torch.Tensor] = imaging.read_image,
               tile: int | None = None) -> StyleTargetsFn:
    """Stage long side -> blended Gram targets on `content`'s device; `hits` collects, per
    style and stage, whether the cache had them. `tile`: compute the Grams in tiles of that
    size (the memory planner's choice for a style image too large at once; same values).

    Each style image is decoded reduced to about twice its largest stage's side
    (`style_read_hint`) and held so for the job: counted by `held.job_input_bytes`."""
    device = content.device
    loaded: dict[str, torch.Tensor] = {}

    def style_image(path: str) -> torch.Tensor:
        if path not in loaded:
            raw = read(path, long_side_hint=style_read_hint(params, path)).to(device)
            loaded[path] = pixels.style_variant(raw, content, params.preserve_color)
        return loaded[path]

    def grams_of(image: torch.Tensor) -> dict[str, torch.Tensor]:
        if tile is None:
            return style_loss.style_targets(feats, image, params.style_layers, params.style_loss)
        return tiled_targets(feats, image, params.style_layers, tile, params.style_loss)

    def targets(long_side: int) -> dict[str, torch.Tensor]:
        grams = []
        for path, _ in styles:
            key = key_for(params, path, content_path, long_side, feats.weights_id)
            g, hit = cache.get_or_compute(key, lambda path=path, side=key.long_side: grams_of(
                pixels.resize_long_side(style_image(path), side)))
            if hits is not None:
                hits.append(hit)
            grams.append({k: v.to(device) for k, v in g.items()})
        return style_loss.blend(grams, [w for _, w in styles], params.style_loss)

    return targets



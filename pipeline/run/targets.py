"""A job's style targets as a function of the stage size, through the style-target cache.

The engine asks `targets(long_side)` once per coarse-to-fine stage; each style image is read
(and colour-converted for `preserve_color`) at most once per job, and only on a cache miss.
An unreadable style raises InputError from that call, which the engine turns into a failure
of this job alone. Shared by the worker, clips (run/clips.py), regions (run/regions.py) and
benchmarks/throughput.py.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from .. import imaging, masks
from ..engine import pixels, style_loss
from ..engine.features import VGGFeatures
from ..engine.guidance import resize_mask
from ..engine.optimize import StyleTargetsFn
from ..engine.tiled import tiled_targets
from ..params import Params
from .cache import StyleTargetCache, TargetKey, key_for, style_read_hint  # noqa: F401 - style_read_hint: re-exported
from .jobs import StyleRef

KeyOf = Callable[[StyleRef, int], TargetKey]     # (style, stage long side) -> its cache key


class StyleSource:
    """Blended targets of style images at a stage, through the cache; each style image (and its
    mask, StyleRef.mask) is read once per job, on the first cache miss, and kept on `content`'s
    device. `key_of` names the cache entry (photos: `key_for`; clips add their colour variant);
    `reference` is the image colour preservation matches the styles to (the content; a clip's
    first frame). `hits` collects, per style and stage, whether the cache had the targets.
    `tile`: compute the targets in tiles of that size (the memory planner's choice for a style
    image too large at once; same values)."""

    def __init__(self, feats: VGGFeatures, params: Params, reference: torch.Tensor, cache: StyleTargetCache,
                 key_of: KeyOf, hits: list[bool] | None = None,
                 read: Callable[..., torch.Tensor] = imaging.read_image, tile: int | None = None):
        self.feats, self.params, self.reference, self.cache = feats, params, reference, cache
        self.key_of, self.hits, self.read, self.tile = key_of, hits, read, tile
        self.device = reference.device
        self._images: dict[str, torch.Tensor] = {}
        self._masks: dict[tuple[str, str], torch.Tensor] = {}

    def image(self, path: str) -> torch.Tensor:
        """Style image `path` decoded reduced to about twice its largest stage's side
        (`style_read_hint`), colour-converted; held so for the job (`held.job_held_bytes`)."""
        if path not in self._images:
            raw = self.read(path, long_side_hint=style_read_hint(self.params, path)).to(self.device)
            self._images[path] = pixels.style_variant(raw, self.reference, self.params.preserve_color)
        return self._images[path]

    def mask(self, ref: StyleRef) -> torch.Tensor:
        """The mask on style image `ref.path`, (1, 1, H, W) at its decoded shape (aspect checked)."""
        key = (ref.path, ref.mask or "")
        if key not in self._masks:
            weights, _ = masks.read_mask(ref.mask, tuple(self.image(ref.path).shape[-2:]))
            self._masks[key] = torch.from_numpy(weights)[None, None].to(self.device)
        return self._masks[key]

    def targets_of(self, image: torch.Tensor, mask: torch.Tensor | None) -> dict[str, torch.Tensor]:
        p = self.params
        if self.tile is None:
            return style_loss.style_targets(self.feats, image, p.style_layers, p.style_loss, mask=mask)
        return tiled_targets(self.feats, image, p.style_layers, self.tile, p.style_loss, mask)

    def _compute(self, ref: StyleRef, side: int) -> dict[str, torch.Tensor]:
        image = pixels.resize_long_side(self.image(ref.path), side)
        mask = resize_mask(self.mask(ref), tuple(image.shape[-2:])) if ref.mask else None
        return self.targets_of(image, mask)

    def one(self, ref: StyleRef, long_side: int) -> dict[str, torch.Tensor]:
        key = self.key_of(ref, long_side)
        t, hit = self.cache.get_or_compute(key, lambda: self._compute(ref, key.long_side))
        if self.hits is not None:
            self.hits.append(hit)
        return {k: v.to(self.device) for k, v in t.items()}

    def blended(self, refs: Sequence[StyleRef], long_side: int) -> dict[str, torch.Tensor]:
        return style_loss.blend([self.one(r, long_side) for r in refs], [r.weight for r in refs],
                                self.params.style_loss)


def photo_keys(feats: VGGFeatures, params: Params, content_path: str) -> KeyOf:
    """Cache keys of a photo job's styles: a mask on a style image changes its key."""
    return lambda ref, side: key_for(params, ref.path, content_path, side, feats.weights_id, mask_path=ref.mask)


def targets_fn(feats: VGGFeatures, params: Params, styles: Sequence[tuple[str, float]], content_path: str,
               content: torch.Tensor, cache: StyleTargetCache, hits: list[bool] | None = None,
               read: Callable[..., torch.Tensor] = imaging.read_image,
               tile: int | None = None) -> StyleTargetsFn:
    """Stage long side -> blended targets of a job without regions, on `content`'s device."""
    source = StyleSource(feats, params, content, cache, photo_keys(feats, params, content_path), hits, read, tile)
    refs = [StyleRef(path, weight) for path, weight in styles]
    return lambda long_side: source.blended(refs, long_side)

"""A job's regions on the run side (Gatys et al. 2017; docs/regions.md): from a `Job` with
`regions` to what the engine takes, a list of `StyleRegion` per stage and a content weight map.

- Content masks (a grey mask, or one colour of a label map) are read once per job at the
  content's decoded shape and kept on the device; the objective resizes them to each stage.
- A styled region's style is its styles' targets through the cache (a mask on a style image
  keys its own entry: run/targets.py), blended like a plain job's, weighted by `style_weight`.
- `style: none` regions add no style term; a region's `content_weight` c makes the content
  term's weight map 1 + Σ (c − 1) · mask (overlapping regions add up), and `style: none`
  regions get the objective's pixel-space photo term, weighted Σ c · mask (c default 1).
- An empty mask leaves its region out, a mask of the image's aspect but another size is
  resized: both are logged and end up in the record's `notes`.
- A job whose regions leave nothing styled still runs: content (and TV) terms only; its style
  term is a zero-weight placeholder (the content's own targets, for the shapes) so it batches
  with other jobs unchanged.
Clips: a region's mask (or label map) may be a folder with one mask per frame, sorted by name.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .. import imaging, masks
from ..engine import pixels
from ..engine.optimize import StyleTargetsFn
from ..engine.style_loss import StyleRegion
from ..errors import InputError
from .grouping import content_shape
from .jobs import Job, RegionSpec
from .targets import StyleSource

log = logging.getLogger(__name__)
Weights = np.ndarray | None          # (H, W) float32 in [0, 1]; None: the whole image
Maps = tuple[torch.Tensor | None, torch.Tensor | None]   # (content weight map, photo map) for JobInput


def size_text(shape: tuple[int, int]) -> str:
    """(H, W) -> "W×H", as notes and messages write sizes."""
    return f"{shape[1]}×{shape[0]}"


def mask_frames(path: str) -> list[str]:
    """The masks of a mask folder, one per frame: its image files sorted by name."""
    try:
        names = sorted(n for n in os.listdir(path)
                       if not n.startswith(".") and os.path.splitext(n)[1].lower() in imaging.IMAGE_EXTENSIONS)
    except OSError as err:
        raise InputError(f"cannot read the mask folder {path}: {err.strerror or err}") from None
    return [str(Path(path) / n) for n in names]


def _file_of(path: str, frame: int | None, frames: int | None) -> str:
    """The mask file to read: `path`, or, for a folder (clips only), frame `frame`'s mask."""
    if not os.path.isdir(path):
        return path
    if frame is None:
        raise InputError(f"mask {path} is a folder: one mask per frame is for clips; give a photo one mask file")
    files = mask_frames(path)
    if len(files) != frames:
        raise InputError(f"mask folder {path} holds {len(files)} masks but the clip has {frames} frames; "
                         "give one mask per frame (sorted by name), or one mask file for every frame")
    return files[frame]


def _resized_note(path: str, original: tuple[int, int] | None, shape: tuple[int, int]) -> str | None:
    """A note when the user's mask differs in size from its image (not when only our reduced
    decode of a large image made the sizes differ); an aspect mismatch is refused here."""
    mask_shape = imaging.image_shape(path)
    if mask_shape is None or original is None or mask_shape in (original, shape):
        return None      # (at the decoded size already: read as it is)
    problem = masks.aspect_problem(mask_shape, original)
    if problem:
        raise InputError(f"mask {path} {problem}")
    return f"mask {path} resized from {size_text(mask_shape)} to {size_text(shape)}"


def region_weights(job: Job, shape: tuple[int, int], original: tuple[int, int] | None = None,
                   frame: int | None = None, frames: int | None = None
                   ) -> tuple[list[tuple[RegionSpec, Weights]], list[str]]:
    """Each region's weights at `shape` (the content's decoded (H, W)), empty ones left out, and
    the notes saying what was adapted. `original`: the content's full-size shape (for notes)."""
    notes: list[str] = []
    labelled: dict[str, dict[str, np.ndarray]] = {}
    kept: list[tuple[RegionSpec, Weights]] = []
    for region in job.regions:
        weights: Weights = None
        source = region.mask or region.labels
        if region.mask:
            path = _file_of(region.mask, frame, frames)
            note = _resized_note(path, original, shape)
            weights, _ = masks.read_mask(path, shape)
        elif region.labels:
            path = _file_of(region.labels, frame, frames)
            note = _resized_note(path, original, shape)
            if path not in labelled:
                legend = {r.name: r.colour for r in job.regions if r.labels == region.labels and r.colour}
                labelled[path], _ = masks.label_masks(path, legend, shape)
            weights = labelled[path].get(region.name)
            source = f"{path} (colour #{'%02x%02x%02x' % region.colour})" if region.colour else path
        else:
            note = None
        if note and note not in notes:
            notes.append(note)
        if weights is not None and masks.is_empty(weights):
            notes.append(f"region {region.name} ignored: its mask {source} is empty")
            log.warning("%s: region %s ignored: its mask %s is empty", job.content, region.name, source)
            continue
        kept.append((region, weights))
    for note in notes:
        if "resized" in note:
            log.info("%s: %s", job.content, note)
    return kept, notes


def style_mask_notes(job: Job) -> list[str]:
    """Masks on style images, checked before the job runs: readable, not empty, of their
    image's aspect (they are read at the style's decoded shape when its targets are computed)."""
    notes: list[str] = []
    for region in job.regions:
        for ref in region.styles:
            if not ref.mask:
                continue
            weights, _ = masks.read_mask(ref.mask)
            if masks.is_empty(weights):
                raise InputError(f"style mask {ref.mask} (region {region.name}, style {ref.path}) is empty: "
                                 "it selects no part of the painting; paint the part to use white")
            note = _resized_note(ref.mask, imaging.image_shape(ref.path), imaging.image_shape(ref.path) or (0, 0))
            if note and note not in notes:
                notes.append(note)
    return notes


def _tensor(weights: Weights, device: torch.device) -> torch.Tensor | None:
    return None if weights is None else torch.from_numpy(np.ascontiguousarray(weights))[None, None].to(device)


def content_weight_map(kept: Sequence[tuple[RegionSpec, Weights]], shape: tuple[int, int],
                       device: torch.device) -> torch.Tensor | None:
    """1 + Σ (c − 1) · mask over regions with a content weight c ≠ 1, (1, 1, H, W) ≥ 0; None: uniform."""
    weighted = [(r.content_weight, w) for r, w in kept if r.content_weight is not None and r.content_weight != 1]
    if not weighted:
        return None
    out = torch.ones(1, 1, *shape, device=device)
    for c, w in weighted:
        out += (c - 1.0) * (_tensor(w, device) if w is not None else 1.0)
    return out.clamp_(min=0.0)


def region_targets(kept: Sequence[tuple[RegionSpec, Weights]], source: StyleSource, content: torch.Tensor,
                   device: torch.device) -> StyleTargetsFn:
    """Stage long side -> the job's StyleRegions (masks at the content's decoded shape, on the
    device, read once here); a zero-weight placeholder when no region is styled."""
    styled = [(r, _tensor(w, device)) for r, w in kept if r.styles]

    def targets(long_side: int) -> list[StyleRegion]:
        if not styled:   # content only: the content's own targets keep the shapes valid
            return [StyleRegion(source.targets_of(pixels.resize_long_side(content, long_side), None), None, 0.0)]
        return [StyleRegion(source.blended(r.styles, long_side), m, r.style_weight) for r, m in styled]

    return targets


def photo_map(kept: Sequence[tuple[RegionSpec, Weights]], shape: tuple[int, int],
              device: torch.device) -> torch.Tensor | None:
    """Where the objective's photo term pulls the result towards the photo's pixels: Σ c · mask
    over `style: none` regions (c their content_weight, default 1), (1, 1, H, W); None: nowhere."""
    kept_as_photo = [(r.content_weight if r.content_weight is not None else 1.0, w) for r, w in kept if not r.styles]
    if not kept_as_photo:
        return None
    out = torch.zeros(1, 1, *shape, device=device)
    for c, w in kept_as_photo:
        out += c * (_tensor(w, device) if w is not None else 1.0)
    return out.clamp_(min=0.0)


def region_inputs(job: Job, content: torch.Tensor, source: StyleSource, frame: int | None = None,
                  frames: int | None = None, original: tuple[int, int] | None = None
                  ) -> tuple[StyleTargetsFn, Maps, list[str]]:
    """(targets per stage, (content weight map, photo map), notes) of a job with regions on `content`
    (1, 3, H, W) as decoded; frame `frame` of `frames` for a clip's per-frame masks."""
    shape = tuple(content.shape[-2:])
    if original is None:
        original = content_shape(job)
    kept, notes = region_weights(job, shape, original, frame, frames)
    if not any(r.styles for r, _ in kept):
        notes.append("no region is styled: the job ran with the content term only")
    maps = (content_weight_map(kept, shape, content.device), photo_map(kept, shape, content.device))
    return region_targets(kept, source, content, content.device), maps, notes


class ClipRegions:
    """A clip's regions: the same masks for every frame (read once), or one mask per frame from
    a folder (read when the frame runs). Notes are kept once each, in order."""

    def __init__(self, job: Job, first_frame: torch.Tensor, source: StyleSource, frames: int):
        self.job, self.source, self.frames = job, source, frames
        self.per_frame = any(os.path.isdir(p) for r in job.regions for p in (r.mask, r.labels) if p)
        self.notes: list[str] = style_mask_notes(job)
        self._last: tuple[int, tuple[StyleTargetsFn, Maps]] | None = None
        self.at(0, first_frame)     # checks every mask (and the folders' counts) before frame 1 runs

    def at(self, t: int, frame: torch.Tensor) -> tuple[StyleTargetsFn, Maps]:
        """Frame t's (targets per stage, (content weight map, photo map))."""
        if self._last is not None and (not self.per_frame or self._last[0] == t):
            return self._last[1]
        fn, maps, notes = region_inputs(self.job, frame, self.source, t if self.per_frame else None,
                                              self.frames)
        for note in notes:
            if self.per_frame and t > 0 and "resized" in note:
                continue      # a folder's masks share a size: its first frame's note says it
            if self.per_frame and "ignored" in note:
                note = f"frame {t + 1}: {note}"
            if note not in self.notes:
                self.notes.append(note)
        self._last = (t, (fn, maps))
        return fn, maps


def job_inputs(job: Job, content: torch.Tensor, source: StyleSource) -> tuple[StyleTargetsFn, Maps, list[str]]:
    """A photo job's (targets per stage, (content weight map, photo map), notes); without
    regions its styles' blend over the whole image, as always."""
    if not job.regions:
        return (lambda long_side: source.blended(job.styles, long_side)), (None, None), []
    notes = style_mask_notes(job)
    fn, maps, more = region_inputs(job, content, source)
    return fn, maps, notes + more

"""Bytes a job holds for its whole run beside what `memory.estimate_bytes` counts.

The estimate covers the optimization at the output size. A job also keeps its decoded inputs:
the content image at the size it was decoded (`imaging.read_image` decodes a larger one
reduced to three times the output's side), each style image decoded reduced so for its
largest stage, an `init` image. All are float32 RGB, 12 bytes a pixel.
A job with regions (run/regions.py) also keeps its masks: one float32 per pixel per region at
the content's decoded size, its content weight map and photo map likewise (and the photo map at the output size), each mask on a style image at
that image's decoded size, and, during the final (largest) stage, the objective's guidance:
per styled region the mask at the output size and its pooled copies for the style layers
(`region_held_bytes`).
The worker takes these off the budget before it plans (docs/performance.md, "Held outside
the estimate"); a clip's frames and flows are streamed instead (run/clip_store.py).
"""
from __future__ import annotations

from .. import imaging
from ..engine.layers import pools_before, scaled_size
from .jobs import Job
from .cache import style_read_hint

RGB_FLOAT = 3 * 4     # bytes a pixel of a decoded (1, 3, H, W) float32 image
MASK_FLOAT = 4        # bytes a pixel of a (1, 1, H, W) float32 mask


def decoded_bytes(path: str, long_side_hint: int | None) -> int:
    """An upper bound on the bytes of `imaging.read_image(path, long_side_hint)`, from the
    header alone (0 when it cannot be read: the job then fails reading it)."""
    shape = imaging.image_shape(path)
    if shape is None:
        return 0
    side = imaging.decoded_long_side(max(shape), long_side_hint)
    h, w = scaled_size(*shape, side) if side < max(shape) else shape
    return RGB_FLOAT * h * w


def job_held_bytes(job: Job, content_loaded: bool = False) -> int:
    """What a photo job holds beyond the estimate: its style images (reduced), its init image
    and, unless `content_loaded` (the caller measured its budget after decoding the content,
    so the content is in it already), its content image."""
    p = job.params
    total = sum(decoded_bytes(s.path, style_read_hint(p, s.path)) for s in job.styles)
    if p.init not in ("content", "noise"):
        total += decoded_bytes(p.init, p.size)
    if not content_loaded:
        total += decoded_bytes(job.content, p.size)
    return total + region_held_bytes(job)


def _guidance_floats(layers: tuple[str, ...]) -> float:
    """Floats per output pixel of one region's guidance: the mask and one pooled copy per
    depth the layers need (engine/guidance.layer_guides; depth 0 is the mask itself)."""
    return 1.0 + sum(4.0 ** -d for d in {pools_before(n) for n in layers} if d > 0)


def region_held_bytes(job: Job) -> int:
    """What a photo job's regions hold (0 without regions): see the module docstring."""
    if not job.regions:
        return 0
    p = job.params
    content_pixels = decoded_bytes(job.content, p.size) // RGB_FLOAT
    shape = imaging.image_shape(job.content)
    h, w = scaled_size(*shape, p.size) if shape else (p.size, p.size)
    masked = [r for r in job.regions if r.mask or r.labels]
    styled = max(1, sum(1 for r in masked if r.styles))
    weighted = any(r.content_weight not in (None, 1) for r in job.regions)
    photo = any(not r.styles for r in job.regions)        # the photo term's map, and per stage
    floats = (len(masked) + weighted + photo) * content_pixels + photo * h * w
    floats += styled * _guidance_floats(tuple(p.style_layers)) * h * w
    if weighted:
        floats += _guidance_floats(tuple(p.content_layers)) * h * w
    total = int(MASK_FLOAT * floats)
    for r in job.regions:
        total += sum(decoded_bytes(s.path, style_read_hint(p, s.path)) // RGB_FLOAT * MASK_FLOAT
                     for s in r.styles if s.mask)
    return total

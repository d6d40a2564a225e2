"""Bytes a job holds for its whole run beside what `memory.estimate_bytes` counts.

The estimate covers the optimization at the output size. A job also keeps its decoded inputs:
the content image at the size it was decoded (`imaging.read_image` decodes a larger one
reduced to three times the output's side), each style image decoded reduced so for its
largest stage, an `init` image. All are float32 RGB, 12 bytes a pixel.
The worker takes these off the budget before it plans (docs/performance.md, "Held outside
the estimate"); a clip's frames and flows are streamed instead (run/clip_store.py).
"""
from __future__ import annotations

from .. import imaging
from ..engine.layers import scaled_size
from .jobs import Job
from .cache import style_read_hint

RGB_FLOAT = 3 * 4     # bytes a pixel of a decoded (1, 3, H, W) float32 image


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
    return total

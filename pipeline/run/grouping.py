"""Which jobs can share one GPU batch: the same image shape at every stage, the same network
and optimizer settings. Weights, targets, seeds, colour modes and budgets may differ."""
from __future__ import annotations

from typing import Hashable

from .jobs import Job
from ..engine.layers import scaled_size
from ..imaging import image_shape
from ..video import clip_shape


def content_shape(job: Job) -> tuple[int, int] | None:
    """(H, W) of a job's content image, or of its clip's frames; None when unreadable."""
    return image_shape(job.content) if job.clip is None else clip_shape(job.clip)


def batch_key(job: Job, content_shape: tuple[int, int] | None) -> Hashable:
    """Jobs with equal keys can run in one batch; an unreadable content gets a key of its own."""
    if content_shape is None:
        return ("alone", job.job_id)
    p = job.params
    stages = tuple(scaled_size(*content_shape, side) for side in p.stage_sizes(content_shape))
    # With several stages every job must switch stage together, so the per-stage budgets must
    # agree; with one stage, jobs of different budgets simply leave the batch at different steps.
    budgets = tuple(p.stage_steps()) if len(stages) > 1 else ()
    # A clip job runs as a chain of frames (run/clips.py): it batches with clips only.
    kind = "clip" if job.clip is not None else "image"
    return (kind, stages, budgets, p.optimizer, p.learning_rate, p.weights, p.pooling,
            tuple(p.content_layers), tuple(p.style_layers))


def job_stages(job: Job) -> tuple[tuple[int, int], ...]:
    """The ETA's unit of work (views/eta.py): a job's (pixels, evaluations) per coarse-to-fine
    stage; a clip's, per frame (its frame count arrives with its first progress report). An
    unreadable content counts at `size`²."""
    p = job.params
    shape = content_shape(job) or (p.size, p.size)
    return tuple((h * w, n) for side, n in zip(p.stage_sizes(shape), p.stage_steps())
                 for h, w in [scaled_size(*shape, side)])

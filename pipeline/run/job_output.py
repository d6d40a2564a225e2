"""What a job writes besides its record: the final image, and its images before the end.

Called by the worker (run/worker.py) with plain values, so the image's file, its metadata,
a content image's transparency put back and the record made from it live in one place.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .. import __version__, fault_hooks, imaging
from ..views.plots import downsample
from .jobs import Job
from .memory import MemoryPlan
from .records import HISTORY_POINTS, JobRecord, done_record
from .snapshots import Snapshots

log = logging.getLogger(__name__)


def save_result(job: Job, image_path: Path, result: Any, *, started_at: str, t0: float, device: str,
                weights_id: str, cache_hit: bool, batch: int, precision: str,
                plan: MemoryPlan | None, notes: tuple[str, ...] = ()) -> JobRecord:
    """Write the job's image (atomically; its alpha put back) and return its `done` record."""
    p = job.params
    meta = {"job_id": job.job_id, "params": p.to_dict(), "nst_batch": __version__}
    fault_hooks.at_save(job.job_id)   # test-only
    height, width = result.image.shape[-2:]
    alpha = imaging.read_alpha(job.content, height, width) if job.clip is None else None
    if alpha is not None and p.format == "jpeg":
        log.warning("%s: its transparency is not kept in a JPEG output (composited on white); "
                    "use format png or tiff to keep it", job.content)
    imaging.save_image(result.image, image_path, p.format, p.quality, meta, p.dpi, p.bit_depth, alpha)
    return done_record(job, losses=result.losses, steps=result.steps, width=int(width), height=int(height),
                       device=device, started_at=started_at, seconds=time.perf_counter() - t0,
                       weights_id=weights_id, cache_hit=cache_hit, batch_size=batch, precision=precision,
                       memory_plan=plan.describe() if plan else None,
                       loss_history=downsample(result.loss_history, HISTORY_POINTS),
                       loss_iterate=getattr(result, "iterate_losses", None), notes=notes)


def snapshots_for(job: Job, image_path: Path, root: Path | None, save_every: int) -> Snapshots | None:
    """The engine's snapshot callback for a job (run/snapshots.py): intermediates when asked
    for, and, in a run (`root`: the output folder), the live gallery's thumbnail."""
    if root is None and not save_every:
        return None
    folder, output = (root, job.output) if root is not None else (image_path.parent, image_path.name)
    return Snapshots(folder, output, job.job_id, len(job.params.stage_steps()), save_every,
                     thumbnail=root is not None)

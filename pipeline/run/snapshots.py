"""A running job's images before its end: intermediates (`save_every`) and the live thumbnail.

The engine offers the current iterate after every evaluation (`JobInput.snapshot`); this
decides which ones are written, so the cost is paid only when an image is due:
- `save_every: N` (0 = off, the default): `<output stem>.steps/step-NNNNNN.jpg` every N
  evaluations, the last `KEEP_STEPS` kept (older ones deleted as new ones land), and
  `stage-K.jpg` at the end of each coarse-to-fine stage (kept), so a 2,000-job grid holds at
  most KEEP_STEPS + stages images per job;
- always, for the live gallery: `.thumbs/live/<job_id>.jpg`, at most every `THUMB_EVERY`
  seconds and at each stage's end, 256 px. The parent deletes it when the job ends.

Every file is written atomically (temp + rename) through `imaging`, JPEG, in bands like the
outputs. A write that fails (disk full) never fails the job: intermediates stop for that job
and the final image is still attempted.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable

import torch

from .. import imaging
from ..engine import pixels
from ..views.live import live_thumb, steps_dir

KEEP_STEPS = 5
THUMB_EVERY = 5.0      # seconds between live thumbnails of one job
THUMB_SIDE = 256
log = logging.getLogger(__name__)


class Snapshots:
    def __init__(self, root: Path, output: str, job_id: str, stages: int, save_every: int = 0,
                 thumbnail: bool = True, clock: Callable[[], float] = time.monotonic):
        self.root, self.stages, self.save_every, self.clock = Path(root), stages, save_every, clock
        self.thumbnail = thumbnail
        self.folder = self.root / steps_dir(output)
        self.thumb = self.root / live_thumb(job_id)
        self.kept: list[Path] = []
        self.last_thumb = float("-inf")
        self.broken = False

    def __call__(self, step: int, stage: int, stage_end: bool, image: Callable[[], torch.Tensor]) -> None:
        if self.broken:
            return
        due_step = self.save_every > 0 and step % self.save_every == 0
        due_stage = self.save_every > 0 and stage_end and self.stages > 1
        due_thumb = self.thumbnail and (stage_end or self.clock() - self.last_thumb >= THUMB_EVERY)
        if not (due_step or due_stage or due_thumb):
            return
        try:
            picture = image().detach().float().cpu()
            if due_thumb:
                self.last_thumb = self.clock()
                imaging.save_image(pixels.resize_long_side(picture, THUMB_SIDE), self.thumb, "jpeg", 85)
            if due_stage:
                imaging.save_image(picture, self.folder / f"stage-{stage + 1}.jpg", "jpeg", 90)
            if due_step:
                path = self.folder / f"step-{step:06d}.jpg"
                imaging.save_image(picture, path, "jpeg", 90)
                self.kept.append(path)
                while len(self.kept) > KEEP_STEPS:
                    self.kept.pop(0).unlink(missing_ok=True)
        except Exception as err:  # noqa: BLE001 - a preview, whatever went wrong, never fails its job
            self.broken = True
            if self.save_every:   # asked for: say so; a live thumbnail alone is not worth a line
                log.warning("intermediate images of %s stopped: %s", self.folder, err)

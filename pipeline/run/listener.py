"""Connects the executor's events to the sidecars, the index, the display and the run log."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Collection, Iterator

from ..errors import NSTError
from ..imaging import remove_partial_writes
from ..views.progress import RunDisplay, describe
from .index import ResultsIndex
from .jobs import Job, safe_join
from .records import JobRecord, failed_record, write_sidecar
from .runlog import RunLog
from ..views.gallery import write_gallery
from ..views.live import LIVE_EVERY, LiveGallery, live_thumb, steps_dir
from ..executors.base import Slot


def final_paths(output_dir: Path, jobs: list[Job]) -> Iterator[Path]:
    """The image and sidecar path of each job, inside `output_dir` (others are skipped)."""
    for job in jobs:
        for relative in (job.output, job.sidecar):
            try:
                yield safe_join(output_dir, relative)
            except NSTError:
                continue


class RunListener:
    """Connects the executor's events to the sidecars, the index and the display."""

    def __init__(self, output_dir: Path, index: ResultsIndex, display: RunDisplay, log: RunLog,
                 live_every: float | None = LIVE_EVERY, job_ids: Collection[str] | None = None):
        self.output_dir, self.index, self.display, self.log = output_dir, index, display, log
        self.slot_of: dict[str, int] = {}
        self.device_of: dict[str, str] = {}
        # Shards write no index, so no page either: `reindex` and `gallery` make it afterwards.
        # The page shows the manifest's jobs only (`job_ids`), as the one written at the end.
        page = functools.partial(write_gallery, job_ids=job_ids)
        self.live = (LiveGallery(output_dir, display.total, display.eta_text, self.message, write=page,
                                 every=live_every)
                     if live_every else None)

    def job_started(self, slot: Slot, job: Job) -> None:
        self.slot_of[job.job_id] = slot.index
        self.device_of[job.job_id] = slot.device
        self.log.write("start", f"{job.job_id} {describe(job)} worker {slot.index} {slot.device}")
        self.display.job_started(slot, job)
        if self.live:
            self.live.started(job.job_id, describe(job), slot.index, slot.device, job.params.stage_steps())

    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None:
        self.display.job_progress(slot, job, step, total, loss)
        if self.live:
            self.live.progress(job.job_id, step, total, loss)

    def job_recorded(self, job: Job, record: JobRecord) -> None:
        """The sidecar (the completion marker, after the image), then the index row."""
        if not record.done:
            remove_partial_writes(final_paths(self.output_dir, [job]))   # a killed worker's temp files
        try:
            write_sidecar(safe_join(self.output_dir, job.sidecar), record)
        except NSTError as err:
            self.display.message(f"warning: {err}")
            if record.done:   # a whole image without its sidecar is unfinished: the next run redoes it
                record = failed_record(job, err, record.device, record.started_at,
                                       record.seconds).tried(record.attempts)
        self.index.upsert(record.as_dict())
        slot = self.slot_of.pop(job.job_id, None)
        where = f"worker {slot} {self.device_of.pop(job.job_id, '')}" if slot is not None else "not started"
        self.log.write(record.status, f"{job.job_id} {describe(job)} {where} {record.seconds:.1f}s"
                       + (f" loss {record.loss_total:.4g}" if record.done and record.loss_total is not None
                          else f": {record.error or record.status}"))
        if record.done:
            self.display.job_finished(slot, job, record.as_dict())
        else:
            self.display.job_failed(slot, job, record.status, record.error or record.status)
        if self.live:
            self.live.ended(job.job_id, record.done)
        _remove_live_thumb(self.output_dir, job)

    def job_retry(self, job: Job, error: str, attempt: int) -> None:
        self.slot_of.pop(job.job_id, None)
        self.device_of.pop(job.job_id, None)
        remove_partial_writes(final_paths(self.output_dir, [job]))     # the dead worker's temp files
        _remove_live_thumb(self.output_dir, job)
        self.log.write("retry", f"{job.job_id} {describe(job)}: {error} (attempt {attempt} failed)")
        self.display.job_retry(job)
        if self.live:
            self.live.ended(job.job_id, None)
        self.display.message(f"retry  {job.job_id[:8]}: {error} (attempt {attempt} failed)")

    def tick(self) -> None:
        if self.live:
            self.live.update()

    def message(self, text: str) -> None:
        self.log.write("note", text)
        self.display.message(text)


def _remove_live_thumb(output_dir: Path, job: Job) -> None:
    """A finished job's latest-iterate thumbnail (the gallery shows its result instead), and
    what a worker killed while writing a preview left: temp files only, hidden, never final."""
    thumb = output_dir / live_thumb(job.job_id)
    try:
        thumb.unlink(missing_ok=True)
    except OSError:
        pass
    remove_partial_writes([thumb])
    try:
        steps = safe_join(output_dir, steps_dir(job.output))
        temps = [e.path for e in os.scandir(steps) if e.name.startswith(".") and e.name.endswith(".tmp")]
    except (NSTError, OSError):
        return
    for path in temps:
        try:
            os.unlink(path)
        except OSError:
            pass

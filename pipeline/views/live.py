"""The gallery while a run works: running jobs, their latest image, stage and loss, the ETA.

`LiveGallery` is fed the run's events by the parent's listener and rewrites
`OUTPUT/index.html` (atomically, through `write_gallery`) at most every `LIVE_EVERY` seconds,
plus once when the run starts and once when it ends. While the run is live the page reloads
itself with a `<meta http-equiv="refresh">` (works from `file://` and over a copied folder:
no server, no script needed); the final write drops it, so a finished page stays still.

A write that fails (disk full, permissions, an unreadable index) never fails the run: it is
reported once per distinct reason through `warn` (the run log and the terminal), and the
next write tries again.

File conventions shared with the worker, which writes the images:
- `.thumbs/live/<job_id>.jpg`: the latest iterate of a running job, small;
- `<output stem>.steps/`: the job's intermediate images (`save_every`), `stage-K.jpg` at the
  end of each coarse-to-fine stage, `step-NNNNNN.jpg` every N evaluations (the last few kept).
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

LIVE_EVERY = 10.0            # seconds between rewrites of the page during a run
LIVE_THUMBS = ".thumbs/live"
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def live_thumb(job_id: str) -> str:
    """Path of a running job's latest-iterate thumbnail, relative to the output folder."""
    return f"{LIVE_THUMBS}/{_SAFE.sub('_', job_id)}.jpg"


def steps_dir(output: str) -> str:
    """The job's own folder of intermediate images, relative to the output folder."""
    return str(Path(output).with_suffix("")) + ".steps"


def stage_images(root: Path, output: str) -> list[str]:
    """The end-of-stage images of a job, in stage order (relative paths; [] when none)."""
    folder = root / steps_dir(output)
    if not folder.is_dir() or folder.is_symlink():
        return []
    found = [(int(m.group(1)), p.name) for p in folder.iterdir()
             if (m := re.fullmatch(r"stage-(\d+)\.jpg", p.name)) and p.is_file()]
    return [f"{steps_dir(output)}/{name}" for _, name in sorted(found)]


@dataclass
class RunningJob:
    job_id: str
    label: str               # content × style, and the varying parameters
    worker: int
    device: str
    stages: tuple[int, ...]  # evaluations per stage, to tell the stage from the step
    step: int = 0
    total: int = 0
    loss: float | None = None

    @property
    def stage(self) -> tuple[int, int]:
        """(1-based stage, stages) of the current step."""
        edge = 0
        for k, n in enumerate(self.stages):
            edge += n
            if self.step < edge or k == len(self.stages) - 1:
                return k + 1, len(self.stages)
        return 1, 1


@dataclass
class LiveState:
    active: bool                          # the run goes on: the page reloads itself
    every: float                          # seconds between rewrites (and reloads)
    eta: str
    done: int
    failed: int
    remaining: int
    total: int
    running: Sequence[RunningJob] = ()
    updated: str = field(default_factory=lambda: time.strftime("%H:%M:%S"))


class LiveGallery:
    def __init__(self, output_dir: Path, total: int, eta: Callable[[], str],
                 warn: Callable[[str], None], clock: Callable[[], float] = time.monotonic,
                 *, write: Callable[..., object], every: float = LIVE_EVERY):
        self.root, self.total, self.eta, self.warn, self.clock = Path(output_dir), total, eta, warn, clock
        self.every = every
        self.write_page = write          # views/gallery.write_gallery (passed in: gallery imports this module)
        self.running: dict[str, RunningJob] = {}
        self.done = self.failed = 0
        self.last = float("-inf")
        self.cost = 0.0                  # seconds the last write took
        self.reported: set[str] = set()  # warnings already given: each once per run

    def started(self, job_id: str, label: str, worker: int, device: str, stages: Sequence[int]) -> None:
        self.running[job_id] = RunningJob(job_id, label, worker, device, tuple(stages))
        self.update()

    def progress(self, job_id: str, step: int, total: int, loss: float) -> None:
        job = self.running.get(job_id)
        if job is not None:
            job.step, job.total, job.loss = step, total, loss
        self.update()

    def ended(self, job_id: str, done: bool | None) -> None:
        """done: True / False (failed for good); None: given back for a retry."""
        self.running.pop(job_id, None)
        if done is True:
            self.done += 1
        elif done is False:
            self.failed += 1
        self.update()

    def state(self, active: bool) -> LiveState:
        return LiveState(active, self.every, self.eta(), self.done, self.failed,
                         self.total - self.done - self.failed, self.total,
                         tuple(sorted(self.running.values(), key=lambda j: j.worker)) if active else ())

    def update(self, force: bool = False) -> None:
        now = self.clock()
        # A page of thousands of jobs takes seconds to write on a busy machine, and the run's
        # events wait meanwhile: never spend more than a quarter of the time writing it.
        if not force and now - self.last < max(self.every, 3 * self.cost):
            return
        self.last = now
        self._write(self.state(active=True))
        self.cost = self.clock() - now

    def close(self) -> None:
        """The run ended: the final page, which no longer reloads."""
        self._write(self.state(active=False))

    def _write(self, state: LiveState) -> None:
        try:
            self.write_page(self.root, live=state)
        except Exception as err:  # noqa: BLE001 - a page, whatever went wrong, never ends a night's run
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            message = f"warning: {reason}"   # as the run's last gallery write would say it
            if message not in self.reported:
                self.reported.add(message)
                self.warn(message)

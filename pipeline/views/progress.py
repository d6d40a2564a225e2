"""What a run shows: a rich live view on a terminal, plain periodic log lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, Mapping

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from ..run.jobs import Job
from .console import make_console
from .eta import EtaModel, Stages, format_eta
from .region_map import region_summary

if TYPE_CHECKING:   # a view never imports an executor; it only reads the slots it is given
    from ..executors.base import Slot

PLAIN_EVERY = 15.0  # seconds between status lines when stdout is not a terminal


def describe(job: Job) -> str:
    styles = "+".join(s.path.rsplit("/", 1)[-1] for s in job.styles)
    if job.regions:   # a region job: which style goes where tells it apart from a plain blend
        styles = "[" + region_summary([{"name": r.name, "styles": [{"path": s.path, "weight": s.weight}
                                                                    for s in r.styles]}
                                       for r in job.regions]) + "]"
    # A grid's jobs share content and style: the values that vary tell them apart.
    varying = ", ".join(f"{k}={v}" for k, v in job.variant)
    return f"{job.content.rsplit('/', 1)[-1]} × {styles}" + (f" ({varying})" if varying else "")


def short(job: Job) -> str:
    return f"{job.job_id[:8]} {describe(job)}"


class RunDisplay:
    """Counts done / failed / remaining and shows each worker's job, step and loss."""

    def __init__(self, total: int, slots: list[Slot], console: Console | None = None,
                 live: bool | None = None, quiet: bool = False, work: Mapping[str, Stages] | None = None,
                 clock=time.monotonic):
        self.console = console or make_console()
        self.quiet = quiet   # `run -q`: failures, retries and warnings only (and the summary, by the caller)
        # rich's own estimate looks at the last 30 s only and never has a speed when jobs take
        # longer: the ETA comes from the run's measured throughput instead (views/eta.py).
        self.eta = EtaModel(clock)
        for job_id, stages in (work or {}).items():   # job_id -> (pixels, evaluations) per stage
            self.eta.add(job_id, stages)
        self.live_mode = not quiet and (sys.stdout.isatty() if live is None else live)
        self.total, self.done, self.failed = total, 0, 0
        self.workers: dict[int, str] = {s.index: "starting" for s in slots}
        self.slots = {s.index: s for s in slots}
        self.started = time.time()
        self._last_plain = 0.0
        self.bar = Progress(TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("done {task.fields[done]} · failed {task.fields[failed]} · "
                                       "remaining {task.fields[remaining]}"),
                            TextColumn("{task.fields[eta]}"), console=self.console)
        self.task = self.bar.add_task("batch", total=total, done=0, failed=0, remaining=total,
                                      eta=format_eta(None))
        self.live = Live(self._render(), console=self.console, refresh_per_second=4) if self.live_mode else None

    def __enter__(self) -> "RunDisplay":
        if self.live:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.live:
            self.live.update(self._render())
            self.live.__exit__(*exc)

    def _render(self):
        table = Table.grid(padding=(0, 2))
        for index, text in self.workers.items():
            table.add_row(f"[dim]worker {index} {self.slots[index].device}", text)
        return Group(self.bar, table)

    def eta_text(self) -> str:
        """`ETA 1h23m (~07:52)`, or `ETA --` until the first progress report is in."""
        return format_eta(self.eta.seconds_left(), time.time())

    def _refresh(self) -> None:
        remaining = self.total - self.done - self.failed
        eta = self.eta_text()
        self.bar.update(self.task, completed=self.done + self.failed, done=self.done,
                        failed=self.failed, remaining=remaining, eta=eta)
        if self.live:
            self.live.update(self._render())
        elif not self.quiet and time.time() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.time()
            busy = "; ".join(f"w{i}: {text}" for i, text in self.workers.items() if text != "idle")
            self.console.print(f"[{time.time() - self.started:7.0f}s] done {self.done} · failed "
                               f"{self.failed} · remaining {remaining} of {self.total} · {eta}"
                               + (f" | {busy}" if busy else ""), highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    # Called by run/listener.py's RunListener, not by the executor (whose Listener events differ):
    # started and progress with the executor's Slot; finished and failed with a slot index,
    # once the sidecar and the index row are written.
    def job_started(self, slot: Slot, job: Job) -> None:
        self.eta.started(slot.index, job.job_id)
        self.workers[slot.index] = f"{short(job)}  step 0/{job.params.steps}"
        self._refresh()

    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None:
        self.eta.progress(job.job_id, step, total)
        self.workers[slot.index] = f"{short(job)}  step {step}/{total}  loss {loss:.4g}"
        self._refresh()

    def job_retry(self, job: Job) -> None:
        self.eta.retry(job.job_id)

    def job_finished(self, slot_index: int | None, job: Job, record: dict[str, Any]) -> None:
        self.eta.finished(job.job_id)
        self.done += 1
        if slot_index is not None:
            self.workers[slot_index] = "idle"
        if not self.live and not self.quiet:
            self.message(f"done   {short(job)}  {record['seconds']:.1f}s  loss {record['loss_total']:.4g}  "
                         f"{self.eta_text()}")
        self._refresh()

    def job_failed(self, slot_index: int | None, job: Job, status: str, error: str) -> None:
        self.eta.finished(job.job_id)
        self.failed += 1
        if slot_index is not None:
            self.workers[slot_index] = "idle"
        self.message(f"{status:6} {short(job)}  {error}" + ("" if self.live else f"  {self.eta_text()}"))
        self._refresh()

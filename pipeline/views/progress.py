"""What a run shows: a rich live view on a terminal, plain periodic log lines otherwise."""
from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ..run.jobs import Job

if TYPE_CHECKING:   # a view never imports an executor; it only reads the slots it is given
    from ..executors.base import Slot

PLAIN_EVERY = 15.0  # seconds between status lines when stdout is not a terminal


def short(job: Job) -> str:
    styles = "+".join(s.path.rsplit("/", 1)[-1] for s in job.styles)
    # A grid's jobs share content and style: the values that vary tell them apart.
    varying = ", ".join(f"{k}={v}" for k, v in job.variant)
    return f"{job.job_id[:8]} {job.content.rsplit('/', 1)[-1]} × {styles}" + (f" ({varying})" if varying else "")


class RunDisplay:
    """Counts done / failed / remaining and shows each worker's job, step and loss."""

    def __init__(self, total: int, slots: list[Slot], console: Console | None = None,
                 live: bool | None = None):
        self.console = console or Console()
        self.live_mode = sys.stdout.isatty() if live is None else live
        self.total, self.done, self.failed = total, 0, 0
        self.workers: dict[int, str] = {s.index: "starting" for s in slots}
        self.slots = {s.index: s for s in slots}
        self.started = time.time()
        self._last_plain = 0.0
        self.bar = Progress(TextColumn("[bold]batch"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("done {task.fields[done]} · failed {task.fields[failed]} · "
                                       "remaining {task.fields[remaining]}"),
                            TextColumn("ETA"), TimeRemainingColumn(), console=self.console)
        self.task = self.bar.add_task("batch", total=total, done=0, failed=0, remaining=total)
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

    def _refresh(self) -> None:
        remaining = self.total - self.done - self.failed
        self.bar.update(self.task, completed=self.done + self.failed, done=self.done,
                        failed=self.failed, remaining=remaining)
        if self.live:
            self.live.update(self._render())
        elif time.time() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.time()
            busy = "; ".join(f"w{i}: {text}" for i, text in self.workers.items() if text != "idle")
            self.console.print(f"[{time.time() - self.started:7.0f}s] done {self.done} · failed "
                               f"{self.failed} · remaining {remaining} of {self.total}"
                               + (f" | {busy}" if busy else ""), highlight=False, soft_wrap=True)

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False)

    # Called by orchestrate's _Listener, not by the executor (whose Listener events differ):
    # started and progress with the executor's Slot; finished and failed with a slot index,
    # once the sidecar and the index row are written.
    def job_started(self, slot: Slot, job: Job) -> None:
        self.workers[slot.index] = f"{short(job)}  step 0/{job.params.steps}"
        self._refresh()

    def job_progress(self, slot: Slot, job: Job, step: int, total: int, loss: float) -> None:
        self.workers[slot.index] = f"{short(job)}  step {step}/{total}  loss {loss:.4g}"
        self._refresh()

    def job_finished(self, slot_index: int | None, job: Job, record: dict[str, Any]) -> None:
        self.done += 1
        if slot_index is not None:
            self.workers[slot_index] = "idle"
        if not self.live:
            self.message(f"done   {short(job)}  {record['seconds']:.1f}s  loss {record['loss_total']:.4g}")
        self._refresh()

    def job_failed(self, slot_index: int | None, job: Job, status: str, error: str) -> None:
        self.failed += 1
        if slot_index is not None:
            self.workers[slot_index] = "idle"
        self.message(f"{status:6} {short(job)}  {error}")
        self._refresh()

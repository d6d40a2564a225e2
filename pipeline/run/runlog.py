"""OUTPUT/run.log: what happened, one line per event, for the morning after.

Appended (never rewritten), one line per event with an ISO timestamp, so a night's runs read
in order and `grep` finds a job by its id. Each line is written with one `write` on a file
opened in append mode (O_APPEND), so lines of two processes (shards) never interleave
mid-line. A log that cannot be written (disk full, read-only folder) never fails the run:
the first failure is reported once through `warn`, and logging stops.
"""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

LOG_NAME = "run.log"


class RunLog:
    def __init__(self, output_dir: Path, warn: Callable[[str], None] = print,
                 clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc)):
        self.path = Path(output_dir) / LOG_NAME
        self.warn, self.clock = warn, clock
        self.broken = False

    def write(self, event: str, text: str) -> None:
        if self.broken:
            return
        stamp = self.clock().astimezone().isoformat(timespec="seconds")
        line = f"{stamp} {event:<8} " + " ".join(text.split()) + "\n"   # one line, whatever it holds
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        except OSError as err:
            self.broken = True
            self.warn(f"warning: cannot write {self.path} ({err.strerror or err}); the run goes on without its log")

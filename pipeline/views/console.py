"""The rich consoles every view prints through: a terminal's width on a terminal, one line per line in a log.

rich wraps at 80 columns when it is not writing to a terminal, which splits one-line errors and
plan-table cells across lines of a log file (grep then misses them). In log mode a console here
never wraps: a line of text stays one line, and a table is as wide as its widest row.
"""
from __future__ import annotations

from rich.console import Console

LOG_WIDTH = 100_000   # "no limit" for rich, which needs a number: tables size to their content


def make_console(stderr: bool = False) -> Console:
    console = Console(stderr=stderr, highlight=False)
    if not console.is_terminal:
        # Decided once, at creation: a log stays a log even if COLUMNS is set in the environment.
        console = Console(stderr=stderr, highlight=False, soft_wrap=True, width=LOG_WIDTH)
    return console

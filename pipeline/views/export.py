"""`nst-batch export`: the results index written out as CSV or JSON Lines."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any

from ..errors import OutputError
from ..run.index import COLUMN_NAMES, JSON_COLUMNS, ResultsIndex
from ..run.index_repair import damaged_message


def export(output_dir: str | Path, fmt: str, dest: str | Path | None = None) -> str | Path:
    """The index as CSV (header row; JSON columns as JSON text; NULL as empty) or JSON Lines.

    Returns the text when `dest` is None, else writes `dest` atomically and returns its path.
    """
    if fmt not in ("csv", "jsonl"):
        raise OutputError(f"unknown export format {fmt!r}; use csv or jsonl")
    try:
        with ResultsIndex(output_dir, create=False) as index:
            rows = index.rows()
    except sqlite3.DatabaseError as err:   # a damaged page: one line naming the fix, no traceback
        raise OutputError(damaged_message(Path(output_dir), err)) from None
    if fmt == "jsonl":
        text = "".join(json.dumps(row) + "\n" for row in rows)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(COLUMN_NAMES)
        for row in rows:
            writer.writerow(_csv_cell(name, row[name]) for name in COLUMN_NAMES)
        text = buffer.getvalue()
    if dest is None:
        return text
    # Imported here: pipeline.imaging loads torch, which `export` and `status` do not need.
    from ..imaging import atomic_write_bytes

    dest = Path(dest)
    try:
        atomic_write_bytes(dest, text.encode("utf-8"))
    except OSError as err:
        raise OutputError(f"cannot write {dest}: {err.strerror or err}") from None
    return dest


def _csv_cell(name: str, value: Any) -> Any:
    if value is None:
        return ""
    if name in JSON_COLUMNS:
        return json.dumps(value, sort_keys=True)
    if name == "cache_hit":
        return int(value)
    return value

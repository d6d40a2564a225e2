"""`nst-batch export`: the results index written out as CSV or JSON Lines."""
from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path
from typing import Any, Collection

from ..errors import OutputError
from ..params import PARAM_NAMES
from ..run.index import COLUMN_NAMES, JSON_COLUMNS, ResultsIndex
from ..run.index_repair import damaged_message
from .region_map import region_summary


def param_column(name: str) -> str:
    """A parameter's column: its name, or `param_<name>` where a result column has that name
    (`steps`: the column is the evaluations run, `param_steps` the ones asked for)."""
    return f"param_{name}" if name in COLUMN_NAMES else name


def flat_columns(rows: list[dict[str, Any]]) -> list[str]:
    """The index's columns with `params` spread into one column per parameter, in its place,
    so a spreadsheet can sort by style_weight; parameters an older run recorded come after."""
    extra = sorted({k for row in rows for k in (row.get("params") or {})} - set(PARAM_NAMES))
    at = COLUMN_NAMES.index("params")
    return [*COLUMN_NAMES[:at], *(param_column(n) for n in (*PARAM_NAMES, *extra)), *COLUMN_NAMES[at + 1:]]


def flat_row(row: dict[str, Any]) -> dict[str, Any]:
    params = row.get("params") or {}
    flat = {k: v for k, v in row.items() if k != "params"}
    flat.update({param_column(k): v for k, v in params.items()})
    flat["regions"] = export_regions(row.get("regions"))
    return flat


def export_regions(regions: Any) -> str | None:
    """A region job's regions as one readable line (views/region_map.py's summary, e.g.
    "sky=starry_night; person=photo"); None (an empty cell, JSON null) for a job without
    regions. The masks' paths stay in the sidecar and in the index's JSON column."""
    return region_summary([r for r in regions if isinstance(r, dict)]) if isinstance(regions, list) and regions else None


def export(output_dir: str | Path, fmt: str, dest: str | Path | None = None,
           job_ids: Collection[str] | None = None) -> str | Path:
    """The index as CSV (header row; one column per parameter; list values as JSON text; NULL
    as empty) or JSON Lines (the same keys). `job_ids`: a manifest's jobs only.

    Returns the text when `dest` is None, else writes `dest` atomically and returns its path.
    """
    if fmt not in ("csv", "jsonl"):
        raise OutputError(f"unknown export format {fmt!r}; use csv or jsonl")
    try:
        with ResultsIndex(output_dir, create=False) as index:
            rows = [r for r in index.rows() if job_ids is None or r["job_id"] in job_ids]
    except sqlite3.DatabaseError as err:   # a damaged page: one line naming the fix, no traceback
        raise OutputError(damaged_message(Path(output_dir), err)) from None
    columns = flat_columns(rows)
    flat = [flat_row(row) for row in rows]
    if fmt == "jsonl":
        text = "".join(json.dumps({c: row.get(c) for c in columns}) + "\n" for row in flat)
    else:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for row in flat:
            writer.writerow(_csv_cell(name, row.get(name)) for name in columns)
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
    if name in JSON_COLUMNS and not isinstance(value, str) or isinstance(value, (list, dict)):
        return json.dumps(value, sort_keys=True)
    if name == "cache_hit":
        return int(value)
    if isinstance(value, bool):
        return str(value).lower()
    return value

"""The results index: one SQLite table of jobs, rebuilt at will from the sidecars.

The JSON sidecar next to each image is the source of truth (the worker writes it last, as the
completion marker). `<output>/index.sqlite` is a queryable copy of those sidecars, written
only by the parent process, one row per job, each upsert its own transaction. WAL mode lets
`nst-batch status` and ad-hoc `sqlite3` sessions read while a run writes. If the database is
lost, corrupt or from another schema version, `reindex` rebuilds it from the sidecars.
"""
from __future__ import annotations

import json
import logging
import math
import os
import sqlite3
import tempfile
import threading
from pathlib import Path
from typing import Any

from ..errors import OutputError
from .sidecars import JOB_ID, is_id_name, sidecar_paths

log = logging.getLogger(__name__)

INDEX_NAME = "index.sqlite"
SCHEMA_VERSION = 4                        # PRAGMA user_version; bump when COLUMNS change
STATUSES = ("done", "failed", "timeout")
MISSING_IMAGE = "output image missing"

# (name, SQL type) in table order: what a job was, how it ended, and width, height, loss_tv,
# attempts and weights_id, so "which settings gave which size, how fast, after how many
# tries" is answerable without opening the sidecars.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("job_id", "TEXT PRIMARY KEY"), ("status", "TEXT NOT NULL"), ("content", "TEXT"),
    ("styles", "TEXT"), ("params", "TEXT"), ("output", "TEXT NOT NULL"),
    ("width", "INTEGER"), ("height", "INTEGER"),
    ("loss_total", "REAL"), ("loss_content", "REAL"), ("loss_style", "REAL"), ("loss_tv", "REAL"),
    ("steps", "INTEGER"), ("seconds", "REAL"), ("attempts", "INTEGER NOT NULL DEFAULT 1"),
    ("device", "TEXT"), ("weights_id", "TEXT"), ("cache_hit", "INTEGER NOT NULL DEFAULT 0"),
    ("error", "TEXT"), ("started_at", "TEXT"), ("finished_at", "TEXT"),
    ("temporal_error", "REAL"),   # clips only (docs/video.md); version 2 added it, at the end
    ("worker", "INTEGER"),        # the executor's slot that ran it (see device); version 3 added it
    ("style_distance", "REAL"), ("content_distance", "REAL"), ("regions", "TEXT"),   # version 4
)
# Columns added since version 1, per version: an older index gains them in place when opened.
_ADDED = {2: COLUMNS[21:22], 3: COLUMNS[22:23], 4: COLUMNS[23:26]}
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
JSON_COLUMNS = ("styles", "params", "regions")
_REAL = tuple(n for n, t in COLUMNS if t.startswith("REAL"))
_INT = ("steps", "width", "height", "attempts", "worker")
_TEXT = ("content", "device", "error", "started_at", "finished_at", "weights_id")
_SQL_INSERT = (f"INSERT OR REPLACE INTO jobs ({', '.join(COLUMN_NAMES)}) "
               f"VALUES ({', '.join('?' * len(COLUMN_NAMES))})")


class ResultsIndex:
    """`<output_dir>/index.sqlite`, opened (and with `create=True` created) in WAL mode.

    Readers pass `create=False`: a missing index is then an OutputError naming the fix
    instead of a silently created empty database.
    """

    def __init__(self, output_dir: str | Path, *, create: bool = True):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / INDEX_NAME
        if not create and not self.path.is_file():
            raise _missing_index_error(self.output_dir)
        if create:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        self._conn = _connect(self.path, self.output_dir, create=create)
        # The parent may record results from a callback thread; one lock serializes writes.
        self._lock = threading.Lock()
        self.write_error: str | None = None   # the first upsert that failed, for the run's summary

    def __enter__(self) -> "ResultsIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._conn.close()

    def upsert(self, record: dict[str, Any]) -> None:
        """Insert or replace the row of `record["job_id"]` (a sidecar-shaped dict)."""
        problem = record_problem(record)
        if problem is not None:
            raise ValueError(f"cannot index record: {problem}")
        # Autocommit mode: one INSERT OR REPLACE is one transaction, so a kill between two
        # upserts leaves whole rows only.
        try:
            with self._lock:
                self._conn.execute(_SQL_INSERT, _to_row(record))
        except sqlite3.Error as err:
            # A full (or failing) disk must not end a batch: the row is a copy of the sidecar,
            # which reindex reads back. The run reports the first failure in its summary.
            if self.write_error is None:
                self.write_error = (f"could not update {self.path} ({_why(err)}); the job sidecars hold "
                                    f"every result: run nst-batch reindex {self.output_dir}"
                                    + (" once the disk has room" if _disk_trouble(err) else ""))

    def get(self, job_id: str) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return None if row is None else _from_row(row)

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All rows (or those with `status`), ordered by output path, JSON columns decoded."""
        if status is None:
            cursor = self._conn.execute("SELECT * FROM jobs ORDER BY output, job_id")
        else:
            cursor = self._conn.execute("SELECT * FROM jobs WHERE status = ? ORDER BY output, job_id",
                                        (status,))
        return [_from_row(row) for row in cursor]

    def delete(self, job_ids: list[str]) -> None:
        """Remove the rows of `job_ids` (prune), in one transaction."""
        with self._lock:
            self._conn.executescript("BEGIN; " + "".join(
                f"DELETE FROM jobs WHERE job_id = '{j}'; " for j in job_ids if JOB_ID.fullmatch(j)) + "COMMIT;")

    def counts(self) -> dict[str, int]:
        """Rows per status; every known status is present, with 0 when there are none."""
        counts = dict.fromkeys(STATUSES, 0)
        for status, n in self._conn.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status"):
            counts[status] = n
        return counts

    def summary(self) -> dict[str, Any]:
        n, seconds, mean_done, hits = self._conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(seconds), 0), "
            "AVG(CASE WHEN status = 'done' THEN seconds END), COALESCE(SUM(cache_hit), 0) FROM jobs"
        ).fetchone()
        return {"jobs": n, "by_status": self.counts(), "seconds_total": float(seconds),
                "seconds_mean_done": mean_done, "cache_hits": hits}

    def integrity_ok(self) -> bool:
        try:
            result = self._conn.execute("PRAGMA integrity_check").fetchall()
        except sqlite3.DatabaseError:
            return False
        return [tuple(row) for row in result] == [("ok",)]


class UnwritableIndex:
    """Stands in for an index the disk has no room to open: the run goes on, sidecars only."""

    def __init__(self, reason: str):
        self.write_error: str | None = reason

    def __enter__(self) -> "UnwritableIndex":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def get(self, job_id: str) -> dict[str, Any] | None:
        return None

    def upsert(self, record: dict[str, Any]) -> None:
        pass


def open_for_run(output_dir: str | Path) -> ResultsIndex | UnwritableIndex:
    """The index a run writes to; on a full disk a stand-in whose `write_error` says so."""
    try:
        return ResultsIndex(output_dir)
    except IndexFullError as err:
        return UnwritableIndex(str(err))


def record_problem(record: Any) -> str | None:
    """Why `record` cannot be a row, or None. Shared by `upsert` and `reindex`."""
    if not isinstance(record, dict):
        return "not a JSON object"
    job_id = record.get("job_id")
    if not isinstance(job_id, str) or not JOB_ID.fullmatch(job_id):
        return "no job_id" if job_id is None else f"job_id {job_id!r} is not 16 hex digits"
    if record.get("status") not in STATUSES:
        return f"unknown status {record.get('status')!r} (expected {', '.join(STATUSES)})"
    output = record.get("output")
    if not isinstance(output, str) or not output or Path(output).is_absolute() or ".." in Path(output).parts:
        return f"output {output!r} is not a path inside the output folder"
    for key, kind, what in (("styles", list, "a list"), ("params", dict, "an object"), ("regions", list, "a list")):
        if not isinstance(record.get(key), (kind, type(None))):
            return f"{key} is not {what}"
    for key in _REAL + _INT:
        value = record.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            return f"{key} is not a number: {value!r}"
    for key in _TEXT:
        if not isinstance(record.get(key), (str, type(None))):
            return f"{key} is not a string: {record.get(key)!r}"
    return None


def reindex(output_dir: str | Path) -> int:
    """Rebuild `<output_dir>/index.sqlite` from the sidecars; returns the number of rows.

    The new database is written beside the old one and moved over it, so readers see either
    the old index or the complete new one. Do not run it while a run writes to the folder:
    that run's open connection would keep writing to the replaced file.
    """
    root = Path(output_dir)
    if not root.is_dir():
        raise OutputError(f"not an nst-batch output folder: {root} (no such folder)")
    records: dict[str, dict[str, Any]] = {}
    for path in sidecar_paths(root):
        record = _read_sidecar(root, path)
        if record is None:
            continue
        # The same id in two folders (identical inputs under two names): keep a done one, then
        # the newest, so the outcome does not depend on directory order.
        previous = records.get(record["job_id"])
        if previous is None or _preference(record) > _preference(previous):
            records[record["job_id"]] = record

    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{INDEX_NAME}.", suffix=".tmp", dir=root)
    except OSError as err:
        raise OutputError(f"cannot write a new {INDEX_NAME} in {root}: {err.strerror or err}") from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        try:
            conn = _connect(tmp, root, create=True)
            try:
                conn.execute("BEGIN")
                conn.executemany(_SQL_INSERT, [_to_row(r) for r in records.values()])
                conn.execute("COMMIT")
            finally:
                conn.close()   # the last close checkpoints the WAL into the file and deletes it
        except (sqlite3.Error, IndexFullError) as err:   # a full disk: the old index stays as it was
            reason = err.reason if isinstance(err, IndexFullError) else _why(err)
            raise OutputError(f"cannot write a new {INDEX_NAME} in {root} ({reason}); the old one is "
                              "unchanged: free some space and run nst-batch reindex again") from None
        _fsync(tmp)
        final = root / INDEX_NAME
        # The old -wal holds frames of the OLD database; left beside the new file, SQLite
        # would replay them onto it. Remove them first: between the unlinks and the replace a
        # reader sees the old file without its newest commits, which the new file supersedes.
        for suffix in ("-wal", "-shm"):
            final.with_name(INDEX_NAME + suffix).unlink(missing_ok=True)
        os.replace(tmp, final)
        _fsync(root)
    finally:
        for leftover in (tmp, tmp.with_name(tmp.name + "-wal"), tmp.with_name(tmp.name + "-shm")):
            leftover.unlink(missing_ok=True)
    return len(records)


def summary(output_dir: str | Path) -> dict[str, Any]:
    """For `nst-batch status`: jobs, by_status, seconds_total, seconds_mean_done, cache_hits."""
    with ResultsIndex(output_dir, create=False) as index:
        return index.summary()


# --- rows ---------------------------------------------------------------------------------

def _to_row(record: dict[str, Any]) -> tuple[Any, ...]:
    row = []
    for name in COLUMN_NAMES:
        value = record.get(name)
        if name in JSON_COLUMNS:
            value = None if value is None else json.dumps(value, sort_keys=True)
        elif name == "cache_hit":
            value = int(bool(value))
        elif name == "attempts":
            value = 1 if value is None else int(value)   # a recorded job was tried at least once
        elif name in _REAL and value is not None:
            # NaN/Infinity are not valid JSON and SQLite stores NaN as NULL anyway: a diverged
            # loss reads as NULL everywhere, and status/error say what happened.
            value = float(value) if math.isfinite(value) else None
        row.append(value)
    return tuple(row)


def _from_row(row: sqlite3.Row) -> dict[str, Any]:
    record = dict(zip(row.keys(), row))
    for name in JSON_COLUMNS:
        if record[name] is not None:
            record[name] = json.loads(record[name])
    record["cache_hit"] = bool(record["cache_hit"])
    return record


def _preference(record: dict[str, Any]) -> tuple[bool, str]:
    return record["status"] == "done", str(record.get("finished_at") or "")


# --- files --------------------------------------------------------------------------------

def _connect(path: Path, output_dir: Path, *, create: bool) -> sqlite3.Connection:
    """Open `path` in WAL mode and check (or, new and `create`, write) the schema."""
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=10.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA journal_mode=WAL")
        # NORMAL in WAL mode: a power loss may drop the last commits, never corrupt the file;
        # the sidecars still hold whatever is dropped.
        conn.execute("PRAGMA synchronous=NORMAL")
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == 0 and create:
            columns = ", ".join(f"{name} {sql}" for name, sql in COLUMNS)
            conn.executescript(
                f"BEGIN; CREATE TABLE IF NOT EXISTS jobs ({columns});"
                " CREATE INDEX IF NOT EXISTS jobs_status ON jobs (status);"
                f" PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif 0 < version < SCHEMA_VERSION:
            steps = " ".join(f"ALTER TABLE jobs ADD COLUMN {name} {sql};"
                             for v in range(version + 1, SCHEMA_VERSION + 1) for name, sql in _ADDED[v])
            conn.executescript(f"BEGIN; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
        elif version != SCHEMA_VERSION:
            conn.close()
            raise OutputError(
                f"{path} has index schema version {version}, this nst-batch uses {SCHEMA_VERSION}; "
                f"run nst-batch reindex {output_dir} to rebuild it from the job sidecars")
    except sqlite3.DatabaseError as err:
        if conn is not None:
            conn.close()
        if _disk_trouble(err):
            raise IndexFullError(_why(err), f"could not open {path} ({_why(err)}); the job sidecars hold "
                                 f"every result: run nst-batch reindex {output_dir} once the disk has room") from None
        raise OutputError(f"{path} is not a readable results index ({err}); "
                          f"run nst-batch reindex {output_dir} to rebuild it from the job sidecars") from None
    return conn


class IndexFullError(OutputError):
    """The index cannot be written: the disk is full or failing (not a damaged database)."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


_SQLITE_IOERR, _SQLITE_FULL = 10, 13


def _disk_trouble(err: sqlite3.Error) -> bool:
    """A full disk (SQLITE_FULL) or a write the file system refused (SQLITE_IOERR_*)."""
    return (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF in (_SQLITE_IOERR, _SQLITE_FULL)


def _why(err: sqlite3.Error) -> str:
    return "the disk is full" if (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF == _SQLITE_FULL else str(err)


def _missing_index_error(output_dir: Path) -> OutputError:
    if not output_dir.is_dir():
        return OutputError(f"not an nst-batch output folder: {output_dir} (no such folder)")
    if next(sidecar_paths(output_dir), None) is None:
        return OutputError(f"not an nst-batch output folder: {output_dir} (no {INDEX_NAME} and no job sidecars)")
    return OutputError(f"no results index in {output_dir}: "
                       f"run nst-batch reindex {output_dir} to rebuild it from the job sidecars")


def _read_sidecar(root: Path, path: Path) -> dict[str, Any] | None:
    """The sidecar's record ready to index, or None (with a warning) when it cannot be used.

    JSON files that are no sidecar (a clip's frames.json, a user's notes) are skipped quietly;
    a file named by a job id, or one that holds a job_id, is warned about."""
    where = path.relative_to(root)
    loud = is_id_name(path)
    try:
        record = json.loads(path.read_bytes().decode("utf-8"))
    except OSError as err:
        if loud:
            log.warning("skipping sidecar %s: cannot read it (%s)", where, err.strerror or err)
        return None
    except (UnicodeDecodeError, ValueError) as err:
        if loud:
            log.warning("skipping sidecar %s: not valid JSON (%s)", where, err)
        return None
    if not loud and not (isinstance(record, dict) and "job_id" in record):
        return None
    problem = record_problem(record)
    if problem is None and Path(record["output"]).with_suffix(".json") != where:
        problem = f"it records the output {record['output']}, not the image beside it"
    if problem is not None:
        log.warning("skipping sidecar %s: %s", where, problem)
        return None
    if record["status"] == "done" and not (root / record["output"]).is_file():
        record = {**record, "status": "failed", "error": MISSING_IMAGE}
    return record


def _fsync(path: Path) -> None:
    """fsync a file or folder, so the replace survives a power loss; best effort on folders."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

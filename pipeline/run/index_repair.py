"""A damaged results index: `run` moves it aside and rebuilds it; readers say how to.

A bad page in `index.sqlite` (a disk fault, a copy cut short: "database disk image is
malformed") must not end a batch. The sidecars are the truth, so `run`, which holds the
output folder alone, keeps the damaged file as `index.sqlite.damaged-<UTC time>` (a non-empty -wal
beside it) for whoever wants to look, writes a new index from the sidecars and goes on.
`export` says in one line to run `nst-batch reindex OUTPUT` (the contact sheet and the
gallery do the same, in views/results.py): a reader never changes the folder.
"""
from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from ..errors import OutputError
from .index import INDEX_NAME, ResultsIndex, UnwritableIndex, _disk_trouble, open_for_run, reindex

log = logging.getLogger(__name__)


def open_for_run_repaired(output_dir: Path) -> tuple[ResultsIndex | UnwritableIndex, str | None]:
    """The index a run writes to, and a note (for the log and the summary) when the old one was
    damaged: it is then moved aside and rebuilt from the sidecars first. The caller holds the
    output folder's lock exclusively (nothing else reads or writes the index meanwhile)."""
    path = output_dir / INDEX_NAME
    problem = damage(path) if path.is_file() else None
    note = None
    if problem is not None:
        aside = move_aside(path)
        note = f"{path} was damaged ({problem}); kept as {aside.name}, "
        try:
            note += f"rebuilt from the job sidecars ({reindex(output_dir)} job(s))"
        except OutputError as err:   # a full disk: the run goes on, as with an unwritable index
            note += f"not rebuilt: {err}"
        log.warning(note)
    return open_for_run(output_dir), note


def damage(path: Path) -> str | None:
    """What SQLite finds wrong with the file at `path` (its first complaint), or None when its
    pages are sound. A full or failing disk is not damage (open_for_run reports it)."""
    try:
        conn = sqlite3.connect(path, timeout=10.0)
        try:
            found = [row[0] for row in conn.execute("PRAGMA quick_check")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        return None if _disk_trouble(err) else str(err)
    return None if found == ["ok"] else str(found[0])


def move_aside(path: Path) -> Path:
    """Rename `path` (and a non-empty -wal) to `<name>.damaged-<UTC time>`; the -shm is only a cache."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    aside, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while aside.exists():   # two repairs within a second
        aside, n = path.with_name(f"{path.name}.damaged-{stamp}-{n}"), n + 1
    try:
        os.replace(path, aside)
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size:   # frames the damaged file may still need
            os.replace(wal, aside.with_name(aside.name + "-wal"))
        wal.unlink(missing_ok=True)               # empty (left by the damage check): nothing to keep
        path.with_name(path.name + "-shm").unlink(missing_ok=True)
    except OSError as err:
        raise OutputError(f"{path} is damaged and cannot be moved aside ({err.strerror or err}); "
                          f"move or delete it, then run nst-batch reindex {path.parent}") from None
    return aside


def damaged_message(output_dir: Path, err: sqlite3.Error) -> str:
    """One line for a reader that met a damaged page: what, and the command that fixes it."""
    return (f"{output_dir / INDEX_NAME} is damaged ({err}); run nst-batch reindex {output_dir} to "
            "rebuild it from the job sidecars (a plain nst-batch run rebuilds it too)")

"""`nst-batch prune MANIFEST`: results in the output folder that no longer belong to the manifest.

A changed manifest (steps 15 → 12) makes new jobs; the old results stay on disk and in the index.
`find_stale` lists them: every sidecar whose job id is not one of the manifest's jobs, every
second copy of a current job under another name, and index rows with no sidecar left.
`prune` moves each one's files (image, any per-job files, thumbnail, then the sidecar, last: it
is the completion marker, so an interrupted prune is finished by running it again) to
`OUTPUT/.pruned/` under the same relative path, or deletes them, and removes their index rows.
Nothing is ever deleted without `delete=True`, and no path outside the output folder is
touched: a file reached through a symlinked folder is left alone and reported, and a symlink
is moved (or unlinked) as a link, never followed.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import OutputError
from .index import INDEX_NAME, ResultsIndex
from .sidecars import sidecar_paths

PRUNED_DIR = ".pruned"
THUMBS_DIR = ".thumbs"      # the gallery's cached thumbnails (views/gallery.py), one per job id


@dataclass(frozen=True)
class Stale:
    job_id: str
    output: str                 # the image (a clip: its mp4), relative to the output folder
    sidecar: str | None         # relative; None: a row of the index with no sidecar on disk
    status: str
    reason: str                 # why it no longer belongs
    clip: bool = False


@dataclass
class PruneResult:
    output_dir: Path
    stale: list[Stale]
    moved: int = 0              # files and folders moved (or deleted)
    skipped: list[str] = field(default_factory=list)    # paths left alone, with the reason


def find_stale(output_dir: Path, current: dict[str, str], manifest: str) -> list[Stale]:
    """Results in `output_dir` that are not `current` (job id -> its output path)."""
    stale: list[Stale] = []
    seen: set[str] = set()
    for path in sidecar_paths(output_dir) if output_dir.is_dir() else ():
        record = _record(path)
        if record is None:
            continue
        relative = str(path.relative_to(output_dir))
        output = record["output"]
        if str(Path(output).with_suffix(".json")) != relative:
            continue   # not the sidecar of the image beside it
        job_id = record["job_id"]
        seen.add(job_id)
        if current.get(job_id) == output:
            continue
        reason = (f"not a job of {manifest}" if job_id not in current
                  else f"an earlier copy of a current job (now {current[job_id]})")
        stale.append(Stale(job_id, output, relative, str(record.get("status")), reason,
                           bool(record.get("clip"))))
    if (output_dir / INDEX_NAME).is_file():
        with ResultsIndex(output_dir, create=False) as index:
            for row in index.rows():
                if row["job_id"] not in current and row["job_id"] not in seen:
                    stale.append(Stale(row["job_id"], row["output"], None, row["status"],
                                       f"not a job of {manifest}; index row only, no sidecar"))
    return stale


def prune(output_dir: Path, stale: list[Stale], current: dict[str, str], delete: bool = False) -> PruneResult:
    """Move (or delete) the files of `stale` and drop their index rows; see the module docstring."""
    root = output_dir.resolve()
    result = PruneResult(output_dir, stale)
    target = output_dir / PRUNED_DIR
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        raise OutputError(f"{target} is not a plain folder; move it away and prune again")
    for item in stale:
        for relative in _files(item, current):
            result.moved += _move(output_dir, root, relative, delete, result.skipped)
    if (output_dir / INDEX_NAME).is_file():
        with ResultsIndex(output_dir, create=False) as index:
            index.delete([s.job_id for s in stale if s.job_id not in current])
            for s in stale:
                row = index.get(s.job_id) if s.job_id in current else None
                if row is not None and row["output"] == s.output:   # the row named the copy just moved
                    record = _record(output_dir / Path(current[s.job_id]).with_suffix(".json"))
                    if record is not None:
                        index.upsert(dict(record))
    return result


def _files(item: Stale, current: dict[str, str]) -> list[str]:
    """What belongs to a stale result, the sidecar last."""
    folder = Path(item.output).parent
    # A clip's frames, mp4 and sidecar share its own folder, named as the mp4 (run/naming.py).
    clip = item.clip and folder.name == Path(item.output).stem and folder.parts != ()
    files = [str(folder)] if clip else [item.output]
    if item.job_id not in current:   # a copy of a current job shares its thumbnail: keep it
        files.append(f"{THUMBS_DIR}/{item.job_id}.jpg")
    if item.sidecar is not None and not clip:   # a clip's sidecar moves with its folder
        files.append(item.sidecar)
    return files


def _move(output_dir: Path, root: Path, relative: str, delete: bool, skipped: list[str]) -> int:
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts or parts[0] == PRUNED_DIR:
        skipped.append(f"{relative}: not a path inside the output folder; left alone")
        return 0
    source = output_dir / relative
    if not source.parent.resolve().is_relative_to(root):
        skipped.append(f"{relative}: its folder is a symlink out of the output folder; left alone")
        return 0
    if not os.path.lexists(source):
        return 0
    if delete:
        if source.is_dir() and not source.is_symlink():
            shutil.rmtree(source)     # removes links inside as links, never what they point to
        else:
            source.unlink()
        return 1
    dest = output_dir / PRUNED_DIR / relative
    n = 1
    while os.path.lexists(dest):   # pruned before under the same name: keep both
        dest = dest.with_name(f"{Path(relative).stem}~{n}{Path(relative).suffix}")
        n += 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, dest)          # atomic, and moves a symlink as the link itself
    return 1


def _record(path: Path) -> dict[str, Any] | None:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("job_id"), str) and isinstance(record.get("output"), str)
    return record if ok else None


def prune_manifest(manifest_path: Path, apply: bool = False, delete: bool = False) -> PruneResult:
    """List (and with `apply`, move or delete) what no longer belongs to the manifest, holding
    the output folder's lock so no run writes meanwhile."""
    from .orchestrate import hold_output, prepare

    manifest, jobs = prepare(manifest_path)
    current = {j.job_id: j.output for j in jobs}
    if not manifest.output.is_dir():
        return PruneResult(manifest.output, [])
    with hold_output(manifest.output):
        stale = find_stale(manifest.output, current, Path(manifest_path).name)
        return prune(manifest.output, stale, current, delete) if apply and stale else PruneResult(manifest.output, stale)

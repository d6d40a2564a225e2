"""What a view is about: a manifest's jobs, or every result in an output folder.

`sheet`, `gallery`, `export` and `status` take either. Given a manifest they show its jobs only
(an output folder also holds the results of the manifest's earlier versions: a changed `steps`
makes new jobs, and the old ones stay on disk); given the folder they show everything.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError

MANIFEST_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Scope:
    output_dir: Path
    job_ids: frozenset[str] | None = None     # None: every result in the folder
    manifest: str | None = None               # the manifest as given, for messages


def is_manifest(target: Path) -> bool:
    return target.is_file() or target.suffix.lower() in MANIFEST_SUFFIXES


def scope_of(target: Path) -> Scope:
    """A manifest file: its output folder and job ids. Anything else: an output folder."""
    if not is_manifest(target):
        return Scope(target)
    if not target.is_file():
        raise InputError(f"manifest not found: {target} (give a manifest file or an output folder)")
    from .orchestrate import prepare

    manifest, jobs = prepare(target)
    return Scope(manifest.output, frozenset(j.job_id for j in jobs), str(target))

"""Finding job sidecars in an output folder, without following links out of it.

A sidecar is the JSON file beside a job's image, under the same name (`<name>.json` beside
`<name>.png`): the completion marker and the source of truth the index is rebuilt from. Names
used to be the job id (`<16 hex>.json`); they now carry the varying parameters
(run/naming.py), so any JSON file can be one: `is_sidecar_name` tells which to warn about.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterator

JOB_ID = re.compile(r"[0-9a-f]{16}")


def sidecar_paths(root: Path) -> Iterator[Path]:
    """`*.json` files under `root`, in a stable order; hidden files and folders (`.thumbs`,
    `.pruned`) are skipped, and symlinked folders are not followed."""
    for folder, dirs, files in os.walk(root):   # does not follow symlinked folders
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(files):
            if name.endswith(".json") and not name.startswith("."):
                yield Path(folder) / name


def is_id_name(path: Path) -> bool:
    """A sidecar named by its job id (every sidecar before output names carried parameters):
    one that cannot be read is worth a warning; another JSON file may be anything."""
    return JOB_ID.fullmatch(path.stem) is not None

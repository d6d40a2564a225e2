"""`validate`: what a run would meet, found before the night, not during it.

Beyond the schema (manifest/schema.py), two checks that need the files: each input image's
header (imaging.check_image_header: missing, empty, not an image, cut short), the memory
planner's answer for each job, as `plan` shows it, and each region's mask (run/region_checks.py:
aspect ratio, unreadable, stray label colours, empty). All are warnings: a bad image or mask or
a refused size fails its own jobs at run time, never the batch; an empty mask's region is
ignored. Loads no torch.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..imaging import check_image_header
from ..manifest.schema import Manifest
from .jobs import INIT_KEYWORDS, Job
from .orchestrate import memory_plan_rows, prepare
from .region_checks import region_problems


@dataclass
class Preflight:
    manifest: Manifest
    jobs: list[Job]
    bad_images: list[str] = field(default_factory=list)   # one line each: the file and the reason
    refused: list[str] = field(default_factory=list)      # one line per refused size
    bad_masks: list[str] = field(default_factory=list)    # masks that fail their photo's jobs
    ignored_regions: list[str] = field(default_factory=list)   # empty masks: the region is left out

    @property
    def warnings(self) -> list[str]:
        return self.bad_images + self.refused + self.bad_masks + self.ignored_regions

    @property
    def failing(self) -> int:
        """Warnings of jobs that would fail (an ignored region does not fail its jobs)."""
        return len(self.warnings) - len(self.ignored_regions)


def image_problems(jobs: list[Job]) -> list[str]:
    """One line per distinct input image of `jobs` that a worker could not read (clips excluded:
    their frames are checked when the clip is read)."""
    paths: dict[str, None] = {}
    for job in jobs:
        if job.clip is None:
            paths.setdefault(job.content)
        for ref in job.styles:
            paths.setdefault(ref.path)
        if job.params.init not in INIT_KEYWORDS:
            paths.setdefault(job.params.init)
    problems = []
    for path in paths:
        if os.path.islink(path) and not os.path.exists(path) or os.path.exists(path) and not os.access(path, os.R_OK):
            continue   # a folder's broken link or unreadable file: the schema has warned of it already
        try:
            check_image_header(Path(path))
        except InputError as err:
            problems.append(str(err))
    return problems


def preflight(manifest_path: Path) -> Preflight:
    manifest, jobs = prepare(manifest_path)
    _, rows = memory_plan_rows(manifest, jobs)
    refused = [f"{row['jobs']} job(s) at {row['size']} would be refused by the memory planner: {row['notes']}"
               for row in rows if row["mode"] == "refused"]
    return Preflight(manifest, jobs, image_problems(jobs), refused, *region_problems(manifest))

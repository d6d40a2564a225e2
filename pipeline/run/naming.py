"""Output names: what each job's files are called inside the output folder.

The default name says what the folders do not: `<content>/<style>/<varying>.<ext>`, where
`<varying>` is `key=value` for every parameter that varies among the manifest's jobs (grid keys
first, in manifest order), e.g. `golden_gate/vangogh/style_weight=200,content_weight=0.5.png`;
when no parameter varies it is `<content>_<style>`. Jobs whose names would still collide (two
photos called a.jpg in different folders, names that differ only in case) get `_<id8>`, the
first 8 hex digits of their job id, appended. An `output_name:` template
(`{content}_{style}_sw{style_weight}`) replaces the default; a template that gives two jobs one
name is an error, not a silent suffix. The job id stays in the sidecar. A job with regions has
the folder `<content>/<region>-<style>+...` (jobs.regions_stem), and a grid's region keys vary
like parameters: `street/sky-a+person-none/sky.style_weight=0.5.png` (`variant` keeps the
full key, `regions.sky.style_weight`).

A name depends on the other jobs (what varies), so it can change when the manifest does. Resume
therefore finds earlier results by job id wherever they lie (`adopt_earlier_names`): a job
already written under another name, by an earlier manifest or by the id-only names of
nst-batch before 0.9 (`<content>/<style>/<job_id>.png`), keeps that name.
"""
from __future__ import annotations

import json
import logging
import re
import string
from dataclasses import replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import ManifestError, NSTError
from ..params import PARAM_NAMES
from .jobs import Job, job_style_stem, safe_join, safe_stem
from .sidecars import sidecar_paths

log = logging.getLogger(__name__)

MAX_STEM = 150                      # characters of a generated file stem (file systems allow 255)
TEMPLATE_FIELDS = ("content", "style", "id", "job_id", *PARAM_NAMES)
# Files a run writes at the top of the output folder: a template must not name a result so.
RESERVED = ("index.html", "index.sqlite", "manifest.resolved.yaml", "contact_sheet")
_UNSAFE = re.compile(r"[^A-Za-z0-9._=,+-]+")
_EXT = {"png": "png", "jpeg": "jpg", "tiff": "tif"}


def value_text(value: Any) -> str:
    """A parameter value as it appears in a file name: 0.5, 200, true, conv1_1+conv2_1."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(value_text(v) for v in value)
    if value is None:
        return "none"
    text = str(value)
    return safe_stem(text) if "/" in text else text      # an init image: its stem


def _safe(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("._") or "_"


def region_values(job: Job) -> dict[str, str]:
    """A job's region values under their grid keys (`regions.sky.style` -> `a,b`), as text."""
    out: dict[str, str] = {}
    for r in job.regions:
        total = sum(s.weight for s in r.styles) or 1.0
        out.update({f"regions.{r.name}.style": ",".join(safe_stem(s.path) for s in r.styles) or "none",
                    f"regions.{r.name}.blend": "+".join(f"{s.weight / total:.3g}" for s in r.styles) or "none",
                    f"regions.{r.name}.style_weight": value_text(r.style_weight),
                    f"regions.{r.name}.content_weight": value_text(1.0 if r.content_weight is None else r.content_weight)})
    return out


def varying_params(jobs: Sequence[Job], grid_keys: Iterable[str] = ()) -> list[str]:
    """Parameters with more than one value among `jobs`: grid keys first, then the others.
    A grid's region keys (`regions.NAME.FIELD`) count among the jobs that have region NAME."""
    values: dict[str, set[str]] = {}
    grid_keys = list(grid_keys)
    for job in jobs:
        for key, value in job.params.to_dict().items():
            values.setdefault(key, set()).add(json.dumps(value, sort_keys=True, default=str))
        for key, text in region_values(job).items():
            if key in grid_keys:
                values.setdefault(key, set()).add(text)
    varying = [k for k in PARAM_NAMES if len(values.get(k, ())) > 1]
    first = [k for k in grid_keys if k in varying or (k.startswith("regions.") and len(values.get(k, ())) > 1)]
    return first + [k for k in varying if k not in first]


def variant(job: Job, keys: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """The job's values of `keys`, as text: what tells it apart from the other jobs (a region
    key the job lacks is left out)."""
    values = job.params.to_dict()
    regions = region_values(job)
    return tuple((k, regions[k] if k in regions else value_text(values.get(k))) for k in keys
                 if not k.startswith("regions.") or k in regions)


def template_problem(template: Any) -> str | None:
    """Why an `output_name` template cannot be used, or None (checked with the manifest)."""
    if not isinstance(template, str) or not template.strip():
        return f"expected a text template such as '{{content}}_{{style}}_sw{{style_weight}}', got {template!r}"
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        return f"{template!r} is not a template ({err}); write fields as {{style_weight}}, a literal brace as {{{{"
    for _, field, spec, conversion in parsed:
        if field is None:
            continue
        if field not in TEMPLATE_FIELDS:
            return (f"unknown field {{{field}}} in {template!r}; fields: content, style, id (8 hex digits "
                    "of the job id), job_id or a parameter (style_weight, content_weight, size, ...)")
        if spec or conversion:
            return f"{{{field}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}}}: " \
                   f"write plain {{{field}}} (values are written as 0.5, 200, true)"
    parts = template.replace("\\", "/").split("/")
    if template.startswith("/") or any(p.strip() in ("", ".", "..") for p in parts):
        return f"{template!r}: folders in a template are plain names (a/b), not absolute, empty, . or .."
    return None


def _template_stem(template: str, job: Job) -> str:
    values = {k: value_text(v) for k, v in job.params.to_dict().items()}
    values.update(content=safe_stem(job.content), style=job_style_stem(job),
                  id=job.job_id[:8], job_id=job.job_id)
    parts = template.replace("\\", "/").split("/")
    return "/".join(_safe(p.format(**values))[:MAX_STEM] for p in parts)


def _default_stem(job: Job, keys: Sequence[str]) -> str:
    folder = f"{safe_stem(job.content)}/{job_style_stem(job)}"
    pairs = variant(job, keys)
    # a region key reads sky.style_weight=0.5 in a name: the folder already says "regions"
    name = ",".join(f"{k.removeprefix('regions.')}={v}" for k, v in pairs) if pairs else \
        f"{safe_stem(job.content)}_{job_style_stem(job)}"
    name = _safe(name)
    if len(name) > MAX_STEM:   # many long values: cut, and the id keeps it unique
        name = name[:MAX_STEM - 9].rstrip("._,=") + "_" + job.job_id[:8]
    return f"{folder}/{name}"


def _path(job: Job, stem: str) -> str:
    if job.clip is not None:   # a clip's frames, mp4 and sidecar share one folder
        return f"{stem}/{stem.rsplit('/', 1)[-1]}.mp4"
    return f"{stem}.{_EXT[job.params.format]}"


def _clash_key(output: str) -> str:
    # Sidecars end in .json whatever the image format; case-insensitive file systems fold case.
    return str(Path(output).with_suffix(".json")).lower()


def name_jobs(jobs: Sequence[Job], grid_keys: Iterable[str] = (), template: str | None = None,
              source: str = "manifest") -> list[Job]:
    """`jobs` with their output names (and `variant`) set; see the module docstring."""
    keys = varying_params(jobs, grid_keys)
    named = []
    for job in jobs:
        stem = _template_stem(template, job) if template else _default_stem(job, keys)
        named.append(replace(job, output=_path(job, stem), variant=variant(job, keys)))
    clashes: dict[str, list[int]] = {}
    for i, job in enumerate(named):
        clashes.setdefault(_clash_key(job.output), []).append(i)
    if template:
        for group in clashes.values():
            if len(group) > 1:
                a, b = named[group[0]], named[group[1]]
                differ = [k for k, v in a.params.to_dict().items() if b.params.to_dict().get(k) != v]
                why = f"they differ in {', '.join(differ)}" if differ else "they differ in their input files"
                raise ManifestError(source, [
                    f"output_name: {template!r} gives {len(group)} jobs the name {a.output} ({why}); "
                    "add the fields that differ, or {id}"])
        for job in named:
            top = job.output.split("/", 1)[0].lower()
            if any(top == r or (r == "contact_sheet" and top.startswith(r)) for r in RESERVED):
                raise ManifestError(source, [f"output_name: {template!r} names a result {job.output}, "
                                             "which the run writes itself; choose another name"])
        return named
    for group in clashes.values():
        if len(group) > 1:
            for i in group:
                named[i] = replace(named[i], output=_suffixed(named[i]))
    return named


def adopt_earlier_names(jobs: Sequence[Job], output_dir: Path) -> list[Job]:
    """The names jobs get in this output folder, given what earlier runs left there.

    A job whose result already lies under another name (same job id) keeps that name. A job
    whose name holds another job's result (an earlier manifest's: `steps` changed, so the ids
    did, not the names) gets `_<id8>` appended instead of overwriting it. The folder is
    searched, once, only when some job has no sidecar of its own at its name."""
    found: dict[str, str] | None = None
    adopted: list[Job] = []
    kept = 0
    for job in jobs:
        owner = _sidecar_owner(output_dir, job)
        if owner == job.job_id:
            adopted.append(job)
            continue
        if found is None:
            found = earlier_outputs(output_dir)
        earlier = found.get(job.job_id)
        if earlier is not None and earlier != job.output:
            kept += earlier != _suffixed(job)   # suffixed beside an earlier manifest's result: not news
            adopted.append(replace(job, output=earlier))
        elif owner is not None:
            adopted.append(replace(job, output=_suffixed(job)))
        else:
            adopted.append(job)
    if kept:
        example = next(a.output for a, j in zip(adopted, jobs) if a.output != j.output)
        log.warning("%d job(s) already have results under earlier names in %s and keep them (e.g. %s); "
                    "new jobs get the current names (docs/manifest.md, output names)", kept, output_dir, example)
    return adopted


def _suffixed(job: Job) -> str:
    stem = job.output.rsplit(".", 1)[0] if job.clip is None else job.output.rsplit("/", 1)[0]
    return _path(job, f"{stem}_{job.job_id[:8]}")


def _sidecar_owner(output_dir: Path, job: Job) -> str | None:
    """The job id recorded in the sidecar at the job's name, or None (no readable sidecar)."""
    try:
        path = safe_join(output_dir, job.sidecar)
    except NSTError:   # an unsafe path: the run reports it on the job
        return job.job_id
    record = _record(path) if path.is_file() else None
    return None if record is None else record["job_id"]


def earlier_outputs(output_dir: Path) -> dict[str, str]:
    """job id -> the output path its sidecar records, for every sidecar under `output_dir`;
    a done result wins over a failed one for the same id."""
    found: dict[str, tuple[bool, str]] = {}
    if not output_dir.is_dir():
        return {}
    for path in sidecar_paths(output_dir):
        record = _record(path)
        if record is None:
            continue
        output = record.get("output")
        if not isinstance(output, str) or str(Path(output).with_suffix(".json")) != \
                str(path.relative_to(output_dir)):
            continue   # a sidecar must sit beside its image, under the same name
        done = record.get("status") == "done"
        previous = found.get(record["job_id"])
        if previous is None or (done and not previous[0]):
            found[record["job_id"]] = (done, output)
    return {job_id: output for job_id, (_, output) in found.items()}


def _record(path: Path) -> Mapping[str, Any] | None:
    try:
        record = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("job_id"), str) else None

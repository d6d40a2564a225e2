"""A run's results as plain records, and the keys and values that sheets and the gallery show.

`load_results` reads the `jobs` table of `<output>/index.sqlite` into frozen `ResultRow`s. A key is
`content`, `style` or any parameter; `axis_value` gives a result's value for a key and
`value_label` the text a sheet, the gallery and --where use for it.

The index is read here with `sqlite3` directly (`SELECT * FROM jobs`), not through
`pipeline.run.index`, so sheets and the gallery only depend on the table's columns.
"""
from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Hashable, Iterable, Mapping, Sequence

from ..errors import InputError
from ..params import DEFAULTS, PARAM_NAMES
from .region_map import region_summary

PARAM_DEFAULTS = DEFAULTS.to_dict()

INDEX_NAME = "index.sqlite"
IMAGE_KEYS = ("content", "style")


# ---------------------------------------------------------------------------- the index

@dataclass(frozen=True)
class ResultRow:
    """One row of the `jobs` table, JSON columns decoded."""

    job_id: str
    status: str
    content: str
    styles: tuple[tuple[str, float], ...]    # (path, weight)
    params: Mapping[str, Any]
    output: str
    error: str | None
    row: Mapping[str, Any]                   # every column, as the gallery's table shows them
    regions: tuple[Mapping[str, Any], ...] | None = None   # a region job's regions (run/records.py)


def load_results(output_dir: str | Path) -> list[ResultRow]:
    """Every job of `<output_dir>/index.sqlite`, sorted by content, style and job id."""
    root = Path(output_dir)
    path = root / INDEX_NAME
    if not root.is_dir():
        raise InputError(f"output folder not found: {root} (give the folder a run wrote to)")
    if not path.is_file():
        raise InputError(f"no results index in {root} ({INDEX_NAME} is missing); "
                         "run `nst-batch run MANIFEST` first or check the folder")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            conn.row_factory = sqlite3.Row
            rows = [dict(r) for r in conn.execute("SELECT * FROM jobs")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as err:
        raise InputError(f"cannot read the results index {path}: {err} "
                         f"(rebuild it from the sidecars with `nst-batch reindex {root}`)") from None
    results = [_result(path, row) for row in rows]
    return sorted(results, key=lambda r: (r.content, _style_label(r.styles), r.job_id))


def select_rows(output_dir: str | Path, job_ids: Collection[str] | None = None) -> list[ResultRow]:
    """The rows a view shows: a manifest's jobs (`job_ids`), or with None every row of the folder.

    Shared by sheets, the gallery and export, so all show the same results."""
    results = load_results(output_dir)
    return results if job_ids is None else [r for r in results if r.job_id in job_ids]


def scope_line(output_dir: str | Path, job_ids: Collection[str] | None = None,
               manifest: str | None = None) -> str:
    """One line saying what a view shows: a manifest's jobs, or everything in the folder."""
    results = load_results(output_dir)
    if job_ids is None:
        return (f"{output_dir}: all {len(results)} result(s) in the folder, from any manifest "
                "(give the manifest instead to see only its jobs)")
    mine = sum(r.job_id in job_ids for r in results)
    others = len(results) - mine
    return (f"{manifest or 'manifest'}: {mine} of its {len(job_ids)} job(s) have results in {output_dir}"
            + (f"; {others} other result(s) there are left out (nst-batch prune {manifest or 'MANIFEST'} "
               "lists them)" if others else ""))


def _result(path: Path, row: dict[str, Any]) -> ResultRow:
    decoded = dict(row)
    for key, empty in (("styles", []), ("params", {})):
        raw = row.get(key)
        try:
            decoded[key] = json.loads(raw) if raw else empty
        except (TypeError, ValueError):
            raise InputError(f"{path}: job {row.get('job_id')}: column {key} is not JSON "
                             "(rebuild the index with `nst-batch reindex`)") from None
    styles = tuple((str(s.get("path", "")), float(s.get("weight", 1.0)))
                   for s in decoded["styles"] if isinstance(s, dict))
    return ResultRow(job_id=str(row.get("job_id")), status=str(row.get("status")),
                  content=str(row.get("content") or ""), styles=styles,
                  params=dict(decoded["params"] or {}), output=str(row.get("output") or ""),
                  error=row.get("error"), row=decoded, regions=_regions(row.get("regions")))


def _regions(raw: Any) -> tuple[Mapping[str, Any], ...] | None:
    """The `regions` column (JSON, schema 4); None for jobs without regions or older indexes."""
    try:
        value = json.loads(raw) if isinstance(raw, str) and raw else raw
    except ValueError:
        return None
    if not isinstance(value, list):
        return None
    return tuple(r for r in value if isinstance(r, Mapping)) or None


def inside(root: Path, relative: str) -> Path | None:
    """root / relative, or None where the index names a path outside the output folder."""
    if not relative or "\0" in relative or Path(relative).is_absolute():
        return None
    target = (root / relative).resolve()
    return target if target.is_relative_to(root.resolve()) else None


def cell_reason(root: Path, result: ResultRow | None) -> str | None:
    """Why a cell shows a placeholder instead of an image, or None if it has an image."""
    if result is None:
        return "no job for this cell"
    if result.status != "done":
        lines = (result.error or "").strip().splitlines()
        return f"{result.status}: {lines[0] if lines else 'no error recorded'}"
    path = inside(root, result.output)
    if path is None:
        return f"missing: output path {result.output!r} is outside the folder"
    if not path.is_file():
        return f"missing: {Path(result.output).name} not found"
    return None


# ---------------------------------------------------------------------------- keys and values

def candidate_keys(results: Sequence[ResultRow]) -> list[str]:
    extras = sorted({k for r in results for k in r.params} - set(PARAM_NAMES))
    return [*IMAGE_KEYS, *PARAM_NAMES, *extras]


def axis_value(result: ResultRow, key: str) -> Hashable:
    if key == "content":
        return result.content
    if key == "style":
        total = sum(w for _, w in result.styles) or 1.0
        styles = tuple((p, round(w / total, 6)) for p, w in result.styles)
        return RegionStyles(styles, region_summary(result.regions)) if result.regions else styles
    if key not in result.params and key in PARAM_DEFAULTS:
        # A record from before the parameter existed ran at its default (older sidecars).
        return _hashable(PARAM_DEFAULTS[key])
    return _hashable(result.params.get(key))


class RegionStyles(tuple):
    """A region job's style axis value: its styles (path, weight), as sheets' headers show
    them, labelled and compared by the regions' summary ("sky=starry_night; person=photo"),
    so two jobs that give the same paintings to different regions are different values."""

    summary: str

    def __new__(cls, styles: Iterable[tuple[str, float]], summary: str) -> "RegionStyles":
        value = super().__new__(cls, styles)
        value.summary = summary
        return value

    def __eq__(self, other: object) -> bool:
        return isinstance(other, RegionStyles) and other.summary == self.summary and tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash((tuple(self), self.summary))

    def __str__(self) -> str:
        return self.summary


def _hashable(value: Any) -> Hashable:
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    return value


def _style_label(styles: Iterable[tuple[str, float]]) -> str:
    styles = list(styles)
    label = "+".join(Path(p).stem for p, _ in styles) or "none"
    weights = {w for _, w in styles}
    if len(weights) > 1:   # a blend's weights matter; equal weights are the default
        label += " " + ":".join(f"{w:g}" for _, w in styles)
    return label


def value_label(key: str, value: Any) -> str:
    """How a value is shown on a sheet, in the gallery, and matched by --where."""
    if key == "content":
        return Path(value).stem
    if key == "style":
        return value.summary if isinstance(value, RegionStyles) else _style_label(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value_label(key, v) for v in value)
    return str(value)


def value_sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def distinct_values(results: Sequence[ResultRow], key: str) -> list[Hashable]:
    values = {axis_value(r, key) for r in results}
    if key in IMAGE_KEYS:
        return sorted(values, key=lambda v: (value_label(key, v), str(v)))
    return sorted(values, key=value_sort_key)


def varying_keys(results: Sequence[ResultRow]) -> list[str]:
    """Keys with more than one value among `results`: content, style, then parameters."""
    return [k for k in candidate_keys(results) if len(distinct_values(results, k)) > 1]

"""Planning contact sheets: which jobs (--where), which keys on rows and columns, which job in
each cell, how many sheets and pages. Pure: reads no images, so the layout can be tested
without looking at pixels.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

from ..errors import InputError, ParamError
from ..params import DEFAULTS, PARAM_NAMES
from .results import (IMAGE_KEYS, ResultRow, axis_value, candidate_keys, distinct_values, value_label,
                      value_sort_key, varying_keys)

DEFAULT_MAX_CELLS = 100         # cells per page; larger grids are split into pages
MAX_SPLIT_SHEETS = 24           # one sheet per value of extra varying keys, up to this many
_STATUS_RANK = {"done": 2, "timeout": 1, "failed": 0}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


# ---------------------------------------------------------------------------- selection

def parse_where(items: Iterable[str]) -> dict[str, Any]:
    """`["seed=0", "style=wave"]` -> {"seed": "0", ...}; a key given twice keeps either value."""
    where: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ParamError(f"--where {item!r}: expected KEY=VALUE, e.g. --where seed=0")
        if key in where:
            previous = where[key]
            where[key] = [*previous, value] if isinstance(previous, list) else [previous, value]
        else:
            where[key] = value
    return where


def matches(key: str, value: Any, want: Any) -> bool:
    """Whether an axis value matches a --where value (text from the CLI or YAML scalars)."""
    if isinstance(want, (list, tuple)):
        # A list is alternatives; for a list-valued parameter it may also be the value itself.
        exact = isinstance(value, tuple) and key not in IMAGE_KEYS and \
            tuple(str(w) for w in want) == tuple(value_label(key, v) for v in value)
        return exact or any(matches(key, value, w) for w in want)
    text = str(want).strip()
    if key == "content":
        return text in (value, Path(value).stem, Path(value).name)
    if key == "style":
        return text == value_label(key, value) or (len(value) == 1 and text in (value[0][0], Path(value[0][0]).name))
    if isinstance(value, bool) or value is None:
        return text.lower() == value_label(key, value) or (value is None and text.lower() in ("", "null"))
    if isinstance(value, (int, float)):
        try:
            return math.isclose(float(text), float(value), rel_tol=1e-9)
        except ValueError:
            return False
    if isinstance(value, tuple):
        return text.replace(" ", "") == value_label(key, value)
    return text == str(value)


def select(results: Sequence[ResultRow], where: Mapping[str, Any]) -> list[ResultRow]:
    known = candidate_keys(results)
    for key, want in where.items():
        if key not in known:
            raise ParamError(f"--where {key}: unknown key; use content, style or a parameter "
                             f"({', '.join(PARAM_NAMES)})")
        kept = [r for r in results if matches(key, axis_value(r, key), want)]
        if not kept:
            values = ", ".join(value_label(key, v) for v in distinct_values(results, key)[:12])
            raise ParamError(f"--where {key}={_show(want)}: no job has that value; {key} is one of: {values}")
        results = kept
    return list(results)


def _show(want: Any) -> str:
    return "|".join(map(str, want)) if isinstance(want, (list, tuple)) else str(want)


# ---------------------------------------------------------------------------- planning

@dataclass(frozen=True)
class SheetPlan:
    """One image to draw: row and column values and the job (or None) in each cell."""

    rows_key: str
    cols_key: str
    row_values: tuple[Hashable, ...]
    col_values: tuple[Hashable, ...]
    cells: tuple[tuple[ResultRow | None, ...], ...]     # [row][col]
    title: str
    tag: str = ""                                   # "seed-1" for one sheet per value
    page: int = 1
    pages: int = 1

    def file_name(self, stem: str, suffix: str) -> str:
        parts = [stem] + ([self.tag] if self.tag else []) + ([f"p{self.page}"] if self.pages > 1 else [])
        return "_".join(parts) + suffix


def choose_axes(results: Sequence[ResultRow], rows: str | None, cols: str | None) -> tuple[str, str]:
    """The rows and columns keys: given ones, else content × style, else the varying ones."""
    known = candidate_keys(results)
    for option, key in (("--rows", rows), ("--cols", cols)):
        if key is not None and key not in known:
            raise ParamError(f"{option} {key!r}: unknown key; use content, style or a parameter "
                             f"({', '.join(PARAM_NAMES)})")
    if rows is not None and rows == cols:
        raise ParamError(f"--rows and --cols are both {rows!r}; choose two different keys")
    varying = varying_keys(results)
    swept = [k for k in varying if k not in IMAGE_KEYS]
    if rows is None and cols is None:
        if "content" in varying and "style" not in varying and swept:
            return "content", swept[0]
        if "style" in varying and "content" not in varying and swept:
            return swept[0], "style"
        if not {"content", "style"} & set(varying) and swept:
            return (swept[0], swept[1]) if len(swept) > 1 else ("content", swept[0])
        return "content", "style"
    if rows is None:
        order = ["content", *swept, "style"]
        rows = next((k for k in order if k in varying and k != cols), "content" if cols != "content" else "style")
    if cols is None:
        order = ["style", *swept, "content"]
        cols = next((k for k in order if k in varying and k != rows), "style" if rows != "style" else "content")
    return rows, cols


def plan_sheets(results: Sequence[ResultRow], rows: str | None = None, cols: str | None = None,
                where: Mapping[str, Any] | None = None,
                max_cells_per_page: int = DEFAULT_MAX_CELLS) -> list[SheetPlan]:
    """Which sheets and pages to draw. Pure: reads no images."""
    if max_cells_per_page < 1:
        raise ParamError(f"--max-cells must be at least 1, got {max_cells_per_page}")
    if not results:
        raise InputError("the results index has no jobs yet; run `nst-batch run MANIFEST` first")
    where = dict(where or {})
    results = select(results, where)
    rows, cols = choose_axes(results, rows, cols)
    extra = [k for k in varying_keys(results) if k not in (rows, cols)]
    groups: dict[tuple, list[ResultRow]] = {}
    for r in results:
        groups.setdefault(tuple(axis_value(r, k) for k in extra), []).append(r)
    if len(groups) > MAX_SPLIT_SHEETS:
        shown = "; ".join(f"{k} ({', '.join(value_label(k, v) for v in distinct_values(results, k)[:5])}"
                          f"{', ...' if len(distinct_values(results, k)) > 5 else ''})" for k in extra)
        example = " ".join(f"--where {k}={value_label(k, distinct_values(results, k)[0])}" for k in extra)
        raise ParamError(f"more than one job per cell of rows={rows} × cols={cols}: {shown} also vary, "
                         f"which would make {len(groups)} sheets (at most {MAX_SPLIT_SHEETS}); "
                         f"pick values with --where (e.g. {example}) or put a key on --rows/--cols")
    fixed = [f"{k}={_show(v)}" for k, v in where.items()]
    plans: list[SheetPlan] = []
    for combo in sorted(groups, key=lambda c: [value_sort_key(v) if k not in IMAGE_KEYS else (3, 0.0, value_label(k, v))
                                               for k, v in zip(extra, c)]):
        members = groups[combo]
        tag = "_".join(f"{k}-{_UNSAFE.sub('_', value_label(k, v))[:40]}" for k, v in zip(extra, combo))
        # The axes are labelled once, in the sheet's corner; the title says what the axes do not.
        title = fixed_title(members, (rows, cols), [*where, *extra])
        plans.extend(_pages(members, rows, cols, title, tag, max_cells_per_page))
    return plans


# Always named in a title, default or not: what a reader asks first about any result.
TITLE_KEYS = ("size", "steps")


def fixed_title(results: Sequence[ResultRow], axes: Sequence[str], chosen: Sequence[str] = ()) -> str:
    """What every cell of a sheet shares: the photo and the painting (when one each), the
    settings that are the same in all cells (size, steps and those that differ from the
    defaults; keys picked with --where or split into sheets always), and the job count.
    E.g. `photo golden_gate · style vangogh · size=512, steps=300, tv_weight=0.001 · 9 jobs`."""
    images = [f"{'photo' if k == 'content' else k} {value_label(k, distinct_values(results, k)[0])}"
              for k in IMAGE_KEYS if k not in axes and len(distinct_values(results, k)) == 1]
    settings = []
    for key in PARAM_NAMES:
        values = distinct_values(results, key)
        if key in axes or len(values) != 1:
            continue
        default = DEFAULTS.to_dict().get(key)
        if key in TITLE_KEYS or key in chosen or not matches(key, values[0], _text(default)):
            settings.append(f"{key}={value_label(key, values[0])}")
    chosen_images = [f"{k}={value_label(k, distinct_values(results, k)[0])}" for k in chosen
                     if k in IMAGE_KEYS and k not in axes and not images]
    parts = list(images)
    parts += [", ".join(chosen_images + settings)] if settings or chosen_images else []
    return " · ".join(parts + [f"{len(results)} job(s)"])


def _text(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else ("null" if value is None else value)


def _pages(results: Sequence[ResultRow], rows: str, cols: str, title: str, tag: str,
           max_cells: int) -> list[SheetPlan]:
    row_values = distinct_values(results, rows)
    col_values = distinct_values(results, cols)
    by_cell: dict[tuple, ResultRow] = {}
    for r in results:
        cell = (axis_value(r, rows), axis_value(r, cols))
        # Duplicates only arise from keys the index does not record; prefer a finished job.
        if cell not in by_cell or _rank(r) > _rank(by_cell[cell]):
            by_cell[cell] = r
    # Whole rows per page where they fit, but no wider than twice a square page's side, so a
    # 2 × 500 sweep becomes readable pages rather than one 500-cell strip.
    per_row = min(len(col_values), max_cells, 2 * math.isqrt(max_cells))
    rows_per_page = max(1, max_cells // per_row)
    chunks = [(rs, cs) for rs in range(0, len(row_values), rows_per_page)
              for cs in range(0, len(col_values), per_row)]
    plans = []
    for page, (rs, cs) in enumerate(chunks, start=1):
        rv = tuple(row_values[rs:rs + rows_per_page])
        cv = tuple(col_values[cs:cs + per_row])
        cells = tuple(tuple(by_cell.get((a, b)) for b in cv) for a in rv)
        page_title = title + (f" | page {page}/{len(chunks)}" if len(chunks) > 1 else "")
        plans.append(SheetPlan(rows, cols, rv, cv, cells, page_title, tag, page, len(chunks)))
    return plans


def _rank(r: ResultRow) -> tuple:
    return (_STATUS_RANK.get(r.status, -1), str(r.row.get("finished_at") or ""), r.job_id)

"""Contact sheets: labelled grids of a run's outputs, read from the results index.

A sheet puts one key on the rows and one on the columns. A key is `content`, `style` or any
parameter. Planning (which job goes in which cell, how many sheets and pages) is pure and
separate from drawing, so the layout can be tested without looking at pixels.

The index is read here with `sqlite3` directly (`SELECT * FROM jobs`), not through
`pipeline.index`, so sheets and the gallery only depend on the table's columns.
"""
from __future__ import annotations

import io
import json
import math
import re
import sqlite3
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Hashable, Iterable, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from .errors import InputError, NSTError, OutputError, ParamError
from .imaging import atomic_write_bytes, read_image, to_pil
from .params import PARAM_NAMES

INDEX_NAME = "index.sqlite"
IMAGE_KEYS = ("content", "style")
DEFAULT_THUMB = 256             # cell size in pixels
THUMB_RANGE = (32, 1024)
DEFAULT_MAX_CELLS = 100         # cells per page; larger grids are split into pages
MAX_SPLIT_SHEETS = 24           # one sheet per value of extra varying keys, up to this many
SHEET_STEM = "contact_sheet"
_STATUS_RANK = {"done": 2, "timeout": 1, "failed": 0}
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

# Colours (RGB).
PAGE = (255, 255, 255)
LETTERBOX = (224, 224, 224)
FAILED_FILL = (250, 222, 222)
MISSING_FILL = (238, 238, 238)
INK = (20, 20, 20)
MUTED = (110, 110, 110)


# ---------------------------------------------------------------------------- the index

@dataclass(frozen=True)
class Result:
    """One row of the `jobs` table, JSON columns decoded."""

    job_id: str
    status: str
    content: str
    styles: tuple[tuple[str, float], ...]    # (path, weight)
    params: Mapping[str, Any]
    output: str
    error: str | None
    row: Mapping[str, Any]                   # every column, as the gallery's table shows them


def load_results(output_dir: str | Path) -> list[Result]:
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
                         "(rebuild it from the sidecars with `nst-batch reindex`)") from None
    results = [_result(path, row) for row in rows]
    return sorted(results, key=lambda r: (r.content, _style_label(r.styles), r.job_id))


def _result(path: Path, row: dict[str, Any]) -> Result:
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
    return Result(job_id=str(row.get("job_id")), status=str(row.get("status")),
                  content=str(row.get("content") or ""), styles=styles,
                  params=dict(decoded["params"] or {}), output=str(row.get("output") or ""),
                  error=row.get("error"), row=decoded)


def inside(root: Path, relative: str) -> Path | None:
    """root / relative, or None where the index names a path outside the output folder."""
    if not relative or "\0" in relative or Path(relative).is_absolute():
        return None
    target = (root / relative).resolve()
    return target if target.is_relative_to(root.resolve()) else None


# ---------------------------------------------------------------------------- keys and values

def candidate_keys(results: Sequence[Result]) -> list[str]:
    extras = sorted({k for r in results for k in r.params} - set(PARAM_NAMES))
    return [*IMAGE_KEYS, *PARAM_NAMES, *extras]


def axis_value(result: Result, key: str) -> Hashable:
    if key == "content":
        return result.content
    if key == "style":
        total = sum(w for _, w in result.styles) or 1.0
        return tuple((p, round(w / total, 6)) for p, w in result.styles)
    return _hashable(result.params.get(key))


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
        return _style_label(value)
    if value is None:
        return "none"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return ",".join(value_label(key, v) for v in value)
    return str(value)


def _sort_key(value: Any) -> tuple:
    if value is None:
        return (0, 0.0, "")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return (1, float(value), "")
    return (2, 0.0, str(value))


def distinct_values(results: Sequence[Result], key: str) -> list[Hashable]:
    values = {axis_value(r, key) for r in results}
    if key in IMAGE_KEYS:
        return sorted(values, key=lambda v: (value_label(key, v), str(v)))
    return sorted(values, key=_sort_key)


def varying_keys(results: Sequence[Result]) -> list[str]:
    """Keys with more than one value among `results`: content, style, then parameters."""
    return [k for k in candidate_keys(results) if len(distinct_values(results, k)) > 1]


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


def select(results: Sequence[Result], where: Mapping[str, Any]) -> list[Result]:
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
    cells: tuple[tuple[Result | None, ...], ...]     # [row][col]
    title: str
    tag: str = ""                                   # "seed-1" for one sheet per value
    page: int = 1
    pages: int = 1

    def file_name(self, stem: str, suffix: str) -> str:
        parts = [stem] + ([self.tag] if self.tag else []) + ([f"p{self.page}"] if self.pages > 1 else [])
        return "_".join(parts) + suffix


def choose_axes(results: Sequence[Result], rows: str | None, cols: str | None) -> tuple[str, str]:
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


def plan_sheets(results: Sequence[Result], rows: str | None = None, cols: str | None = None,
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
    groups: dict[tuple, list[Result]] = {}
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
    for combo in sorted(groups, key=lambda c: [_sort_key(v) if k not in IMAGE_KEYS else (3, 0.0, value_label(k, v))
                                               for k, v in zip(extra, c)]):
        members = groups[combo]
        tag = "_".join(f"{k}-{_UNSAFE.sub('_', value_label(k, v))[:40]}" for k, v in zip(extra, combo))
        title = " | ".join([f"rows: {rows}", f"cols: {cols}", *fixed,
                            *(f"{k}={value_label(k, v)}" for k, v in zip(extra, combo))])
        plans.extend(_pages(members, rows, cols, title, tag, max_cells_per_page))
    return plans


def _pages(results: Sequence[Result], rows: str, cols: str, title: str, tag: str,
           max_cells: int) -> list[SheetPlan]:
    row_values = distinct_values(results, rows)
    col_values = distinct_values(results, cols)
    by_cell: dict[tuple, Result] = {}
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


def _rank(r: Result) -> tuple:
    return (_STATUS_RANK.get(r.status, -1), str(r.row.get("finished_at") or ""), r.job_id)


def cell_reason(root: Path, result: Result | None) -> str | None:
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


# ---------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a sheet; every size follows from the thumbnail size."""

    thumb: int

    @property
    def font_size(self) -> int:
        return max(10, self.thumb // 14)

    @property
    def line_h(self) -> int:
        return self.font_size + 4

    @property
    def margin(self) -> int:
        return max(4, self.thumb // 32)

    @property
    def cell_h(self) -> int:          # image box plus one caption line
        return self.thumb + self.line_h

    def header_h(self, cols_key: str) -> int:
        return self.thumb + self.line_h if cols_key in IMAGE_KEYS else 2 * self.line_h

    def size(self, cols_key: str, nrows: int, ncols: int) -> tuple[int, int]:
        m, t = self.margin, self.thumb
        width = m + t + ncols * (m + t) + m
        height = m + self.line_h + m + self.header_h(cols_key) + nrows * (m + self.cell_h) + m
        return width, height

    def col_x(self, c: int) -> int:
        return 2 * self.margin + self.thumb + c * (self.margin + self.thumb)

    def header_y(self) -> int:
        return 2 * self.margin + self.line_h

    def row_y(self, cols_key: str, r: int) -> int:
        return self.header_y() + self.header_h(cols_key) + self.margin + r * (self.margin + self.cell_h)


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)    # Pillow ≥ 10.1: the bundled scalable font
    except TypeError:                                # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def _draw_text(draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, font: Any, fill: tuple) -> None:
    """The one place text is drawn (tests record what goes through it)."""
    draw.text(xy, text, font=font, fill=fill)


def _fit(text: str, font: Any, width: int) -> str:
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def _wrap(text: str, font: Any, width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        trial = f"{current} {word}".strip()
        if font.getlength(trial) <= width:
            current = trial
            continue
        if current:
            lines.append(current)
        while font.getlength(word) > width and len(lines) < max_lines:   # break long words
            cut = max(1, next((i for i in range(len(word), 0, -1) if font.getlength(word[:i]) <= width), 1))
            lines.append(word[:cut])
            word = word[cut:]
        current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines - 1] + [_fit(" ".join(lines[max_lines - 1:]), font, width)]
    return lines


class _Painter:
    """Draws one SheetPlan; input thumbnails are read once per painter."""

    def __init__(self, root: Path, layout: Layout):
        self.root = root
        self.layout = layout
        self.font = _font(layout.font_size)
        self._thumbs: dict[str, Image.Image | None] = {}

    def paint(self, plan: SheetPlan) -> Image.Image:
        lay = self.layout
        t, m = lay.thumb, lay.margin
        size = lay.size(plan.cols_key, len(plan.row_values), len(plan.col_values))
        sheet = Image.new("RGB", size, PAGE)
        draw = ImageDraw.Draw(sheet)
        self.text(draw, (m, m), _fit(plan.title, self.font, size[0] - 2 * m), INK)
        self.text(draw, (m, lay.header_y()), _fit(f"rows: {plan.rows_key}", self.font, t), MUTED)
        self.text(draw, (m, lay.header_y() + lay.line_h), _fit(f"cols: {plan.cols_key}", self.font, t), MUTED)
        for c, value in enumerate(plan.col_values):
            self.header(sheet, draw, plan.cols_key, value, (lay.col_x(c), lay.header_y()), lay.header_h(plan.cols_key))
        for r, value in enumerate(plan.row_values):
            y = lay.row_y(plan.cols_key, r)
            self.header(sheet, draw, plan.rows_key, value, (m, y), lay.cell_h)
            for c, result in enumerate(plan.cells[r]):
                caption = " | ".join(self.caption(k, v) for k, v in
                                     ((plan.rows_key, value), (plan.cols_key, plan.col_values[c])))
                self.cell(sheet, draw, result, caption, (lay.col_x(c), y))
        return sheet

    def text(self, draw: ImageDraw.ImageDraw, xy: tuple[int, int], text: str, fill: tuple) -> None:
        _draw_text(draw, xy, text, self.font, fill)

    @staticmethod
    def caption(key: str, value: Any) -> str:
        return value_label(key, value) if key in IMAGE_KEYS else f"{key}={value_label(key, value)}"

    def header(self, sheet: Image.Image, draw: ImageDraw.ImageDraw, key: str, value: Any,
               xy: tuple[int, int], height: int) -> None:
        lay, (x, y) = self.layout, xy
        label = value_label(key, value)
        if key not in IMAGE_KEYS:
            text = f"{key}={label}"
            lines = [text]
            if self.font.getlength(text) > lay.thumb:     # key on one line, value below
                lines = [_fit(f"{key}=", self.font, lay.thumb),
                         *_wrap(label, self.font, lay.thumb, max(1, height // lay.line_h - 1))]
            top = y + (height - len(lines) * lay.line_h) // 2
            for i, line in enumerate(lines):
                self.text(draw, (x, top + i * lay.line_h), line, INK)
            return
        paths = [value] if key == "content" else [p for p, _ in value]
        thumbs = [self.input_thumb(p, (lay.thumb // len(paths), lay.thumb)) for p in paths]
        if all(thumbs):
            # A blend shows its styles side by side in the one box.
            for i, thumb in enumerate(thumbs):
                box_w = lay.thumb // len(paths)
                sheet.paste(thumb, (x + i * box_w + (box_w - thumb.width) // 2, y + (lay.thumb - thumb.height) // 2))
        else:
            draw.rectangle([x, y, x + lay.thumb - 1, y + lay.thumb - 1], fill=MISSING_FILL)
            gone = ", ".join(Path(p).name for p, th in zip(paths, thumbs) if th is None)
            for i, line in enumerate(_wrap(f"{gone} (input missing)", self.font, lay.thumb - 4,
                                           max(1, lay.thumb // lay.line_h))):
                self.text(draw, (x + 2, y + 2 + i * lay.line_h), line, MUTED)
        self.text(draw, (x, y + lay.thumb + 1), _fit(label, self.font, lay.thumb), INK)

    def input_thumb(self, path: str, box: tuple[int, int]) -> Image.Image | None:
        key = f"{path}\0{box}"
        if key not in self._thumbs:
            self._thumbs[key] = self.load(Path(path), box)
        return self._thumbs[key]

    @staticmethod
    def load(path: Path, box: tuple[int, int]) -> Image.Image | None:
        try:
            return ImageOps.contain(to_pil(read_image(path, long_side_hint=max(box))), box)
        except NSTError:
            return None

    def cell(self, sheet: Image.Image, draw: ImageDraw.ImageDraw, result: Result | None, caption: str,
             xy: tuple[int, int]) -> None:
        lay, (x, y) = self.layout, xy
        t = lay.thumb
        reason = cell_reason(self.root, result)
        image = None
        if reason is None:
            image = self.load(inside(self.root, result.output), (t, t))
            reason = None if image is not None else f"unreadable: {Path(result.output).name}"
        if image is not None:
            draw.rectangle([x, y, x + t - 1, y + t - 1], fill=LETTERBOX)
            sheet.paste(image, (x + (t - image.width) // 2, y + (t - image.height) // 2))
        else:
            failed = result is not None and result.status != "done"
            draw.rectangle([x, y, x + t - 1, y + t - 1], fill=FAILED_FILL if failed else MISSING_FILL)
            for i, line in enumerate(_wrap(reason, self.font, t - 4, max(1, (t - 4) // lay.line_h))):
                self.text(draw, (x + 2, y + 2 + i * lay.line_h), line, INK)
        self.text(draw, (x, y + t + 1), _fit(caption, self.font, t), MUTED)


# ---------------------------------------------------------------------------- entry point

def make_sheets(output_dir: str | Path, rows: str | None = None, cols: str | None = None,
                where: Mapping[str, Any] | None = None, thumb: int = DEFAULT_THUMB,
                dest: str | Path | None = None,
                max_cells_per_page: int = DEFAULT_MAX_CELLS) -> list[Path]:
    """Draw the contact sheet(s) of a run and write them atomically; returns the files written.

    `dest` defaults to `<output_dir>/contact_sheet.png`; pages and one-sheet-per-value files
    are named after it (`contact_sheet_p2.png`, `contact_sheet_seed-1.png`).
    """
    root = Path(output_dir)
    low, high = THUMB_RANGE
    if not low <= thumb <= high:
        raise ParamError(f"--thumb must be between {low} and {high} pixels, got {thumb}")
    dest = Path(dest) if dest is not None else root / f"{SHEET_STEM}.png"
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(dest.suffix.lower())
    if fmt is None:
        raise OutputError(f"-o {dest}: unsupported sheet format {dest.suffix or '(none)'!r}; use .png, .jpg or .jpeg")
    plans = plan_sheets(load_results(root), rows, cols, where, max_cells_per_page)
    painter = _Painter(root, Layout(thumb))
    written = []
    for plan in plans:
        path = dest.with_name(plan.file_name(dest.stem, dest.suffix))
        buffer = io.BytesIO()
        image = painter.paint(plan)
        image.save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        try:
            atomic_write_bytes(path, buffer.getvalue())
        except OSError as err:
            raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
        written.append(path)
    return written

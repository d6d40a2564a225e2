"""Contact sheets: labelled grids of a run's outputs, read from the results index.

A sheet puts one key on the rows and one on the columns. A key is `content`, `style` or any
parameter. Planning (which job goes in which cell, how many sheets and pages) is pure and lives
in sheet_plan.py, separate from the drawing here, so the layout can be tested without
looking at pixels. results.py reads the index into plain records.
"""
from __future__ import annotations

import io
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..errors import NSTError, OutputError, ParamError
from ..imaging import atomic_write_bytes, read_image, to_pil
from .clips import first_frame, is_clip_output, strip
from .results import IMAGE_KEYS, ResultRow, cell_reason, inside, load_results, select_rows, value_label
from .sheet_plan import DEFAULT_MAX_CELLS, SheetPlan, parse_where, plan_sheets

DEFAULT_THUMB = 256             # cell size in pixels
THUMB_RANGE = (32, 1024)
SHEET_STEM = "contact_sheet"

# Colours (RGB).
PAGE = (255, 255, 255)
LETTERBOX = (224, 224, 224)
FAILED_FILL = (250, 222, 222)
MISSING_FILL = (238, 238, 238)
INK = (20, 20, 20)
MUTED = (110, 110, 110)


# ---------------------------------------------------------------------------- drawing

@dataclass(frozen=True)
class Layout:
    """Pixel geometry of a sheet; every size follows from the thumbnail size."""

    thumb: int
    title_lines: int = 1          # the title wraps, never cut (sheet_plan.fixed_title)
    caption_lines: int = 1        # every cell's caption gets as many lines as the longest needs
    header_lines: int = 2         # a parameter column header: key=value wrapped, and the corner

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
    def cell_h(self) -> int:          # image box plus its caption lines
        return self.thumb + self.caption_lines * self.line_h

    def header_h(self, cols_key: str) -> int:
        return max(self.thumb + self.line_h if cols_key in IMAGE_KEYS else 0, self.header_lines * self.line_h)

    def size(self, cols_key: str, nrows: int, ncols: int) -> tuple[int, int]:
        m, t = self.margin, self.thumb
        width = m + t + ncols * (m + t) + m
        height = m + self.title_lines * self.line_h + m + self.header_h(cols_key) + nrows * (m + self.cell_h) + m
        return width, height

    def col_x(self, c: int) -> int:
        return 2 * self.margin + self.thumb + c * (self.margin + self.thumb)

    def header_y(self) -> int:
        return 2 * self.margin + self.title_lines * self.line_h

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
    """`text`, or as much of it as fits followed by "...", cut at a word's end (a space, `_`,
    `-`, `.`, `=`, `,`) where there is one: never mid-word unless a single word is too wide."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    words = re.match(r"(.*[ _\-.=,])", text)
    return (words.group(1) if words else text) + "..."


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


_BREAKS = re.compile(r"(?<=[=,_+|-])")


def wrap_words(text: str, font: Any, width: int) -> list[str]:
    """`text` in lines no wider than `width`, broken at spaces, else after = , _ + | -, and
    only a single unbreakable run wider than a line is split between letters. Nothing is cut:
    the lines joined hold every character of `text`."""
    pieces: list[tuple[bool, str]] = []     # (starts a word, text)
    for word in text.split(" "):
        first = True
        for chunk in _BREAKS.split(word) if font.getlength(word) > width else [word]:
            while font.getlength(chunk) > width:   # a run with no break point: letters
                cut = max(1, next((i for i in range(len(chunk), 0, -1) if font.getlength(chunk[:i]) <= width), 1))
                pieces.append((first, chunk[:cut]))
                chunk, first = chunk[cut:], False
            if chunk:
                pieces.append((first, chunk))
                first = False
    lines: list[str] = []
    for new_word, piece in pieces:
        joined = (f"{lines[-1]} {piece}" if new_word else lines[-1] + piece) if lines else piece
        if lines and font.getlength(joined) <= width:
            lines[-1] = joined
        else:
            lines.append(piece)
    return [line for line in lines if line] or [""]


def layout_for(plans: Sequence[SheetPlan], thumb: int) -> Layout:
    """The geometry that fits every title, header and caption of `plans` in full."""
    base = Layout(thumb)
    font = _font(base.font_size)
    width = lambda p: base.size(p.cols_key, 1, len(p.col_values))[0] - 2 * base.margin
    title = max(len(wrap_words(p.title, font, width(p))) for p in plans)
    caption = max((len(wrap_words(caption_text(p, r, c), font, thumb))
                   for p in plans for r in range(len(p.row_values)) for c in range(len(p.col_values))), default=1)
    corner = max(len(wrap_words(f"rows: {p.rows_key}", font, thumb)) + len(wrap_words(f"cols: {p.cols_key}", font, thumb))
                 for p in plans)
    cols = max((len(wrap_words(f"{p.cols_key}={value_label(p.cols_key, v)}", font, thumb))
                for p in plans if p.cols_key not in IMAGE_KEYS for v in p.col_values), default=1)
    return Layout(thumb, title_lines=title, caption_lines=caption, header_lines=max(2, corner, cols))


def caption_text(plan: SheetPlan, r: int, c: int) -> str:
    """A cell's caption: its row and column values, in full (`style_weight=10, content_weight=0.5`)."""
    return ", ".join(_Painter.caption(k, v) for k, v in ((plan.rows_key, plan.row_values[r]),
                                                          (plan.cols_key, plan.col_values[c])))


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
        for i, line in enumerate(wrap_words(plan.title, self.font, size[0] - 2 * m)):
            self.text(draw, (m, m + i * lay.line_h), line, INK)
        corner = [*wrap_words(f"rows: {plan.rows_key}", self.font, t), *wrap_words(f"cols: {plan.cols_key}", self.font, t)]
        for i, line in enumerate(corner):
            self.text(draw, (m, lay.header_y() + i * lay.line_h), line, MUTED)
        for c, value in enumerate(plan.col_values):
            self.header(sheet, draw, plan.cols_key, value, (lay.col_x(c), lay.header_y()), lay.header_h(plan.cols_key))
        for r, value in enumerate(plan.row_values):
            y = lay.row_y(plan.cols_key, r)
            self.header(sheet, draw, plan.rows_key, value, (m, y), lay.cell_h)
            for c, result in enumerate(plan.cells[r]):
                self.cell(sheet, draw, result, caption_text(plan, r, c), (lay.col_x(c), y))
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
            lines = wrap_words(f"{key}={label}", self.font, lay.thumb)   # in full: the layout made room
            top = y + (height - len(lines) * lay.line_h) // 2
            for i, line in enumerate(lines):
                self.text(draw, (x, top + i * lay.line_h), line, INK)
            return
        paths = [value] if key == "content" else [p for p, _ in value]
        thumbs = [self.input_thumb(p, (lay.thumb // len(paths), lay.thumb)) for p in paths]
        if not paths:      # a region job whose every region keeps the photo: no painting to show
            draw.rectangle([x, y, x + lay.thumb - 1, y + lay.thumb - 1], fill=MISSING_FILL)
        elif all(thumbs):
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
        if is_clip_output(str(path)):
            # A clip job's mp4: a strip of the frames beside it; a content video: its first frame.
            return strip(path, box) or first_frame(path, box)
        try:
            return ImageOps.contain(to_pil(read_image(path, long_side_hint=max(box))), box)
        except NSTError:
            return first_frame(path, box)      # a clip's content (video or frames folder), or None

    def cell(self, sheet: Image.Image, draw: ImageDraw.ImageDraw, result: ResultRow | None, caption: str,
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
        for i, line in enumerate(wrap_words(caption, self.font, t)):
            self.text(draw, (x, y + t + 1 + i * lay.line_h), line, MUTED)


# ---------------------------------------------------------------------------- entry point

def make_sheets(output_dir: str | Path, rows: str | None = None, cols: str | None = None,
                where: Mapping[str, Any] | None = None, thumb: int = DEFAULT_THUMB,
                dest: str | Path | None = None,
                max_cells_per_page: int = DEFAULT_MAX_CELLS,
                job_ids: Collection[str] | None = None) -> list[Path]:
    """Draw the contact sheet(s) of a run and write them atomically; returns the files written.

    `job_ids`: a manifest's jobs only (views/results.py's select_rows); None: every result.

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
    plans = plan_sheets(select_rows(root, job_ids), rows, cols, where, max_cells_per_page)
    painter = _Painter(root, layout_for(plans, thumb))
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


__all__ = ["make_sheets", "parse_where", "plan_sheets", "load_results", "Layout", "DEFAULT_THUMB",
           "DEFAULT_MAX_CELLS", "THUMB_RANGE", "IMAGE_KEYS", "SHEET_STEM"]

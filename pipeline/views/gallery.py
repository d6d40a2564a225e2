"""A static HTML gallery of a run: `<output>/index.html`, opened straight from disk.

The page needs no network and no server: thumbnails are cached JPEGs beside the outputs
(`.thumbs/<job_id>.jpg`), links are relative, scripts and styles are inline, and a
Content-Security-Policy forbids loading anything that is not a local file. Filters and the
sortable table are a few lines of plain JavaScript over select elements.

`index.html?selftest=1` (or `#selftest`) makes the page check itself after loading and write
the results as JSON into `<pre id="selftest">`; the browser test reads it from the DOM.
"""
from __future__ import annotations

import html
import io
import json
import math
import re
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence
from urllib.parse import quote

from ..errors import NSTError, OutputError
from ..imaging import atomic_write_bytes, read_image, to_pil
from .results import (IMAGE_KEYS, ResultRow, axis_value, cell_reason, inside, select_rows, INDEX_NAME, value_label,
                      value_sort_key, varying_keys)
from .clips import is_clip_output, strip
from .sheets import SHEET_STEM
from .gallery_page import PAGE as _PAGE, SCRIPT as _SCRIPT, STYLE as _STYLE
from .live import LiveState, live_thumb, stage_images
from .plots import downsample, loss_curve, scatter
from .region_map import ensure_region_thumb, region_colours, region_lines
from .best import pareto_front, scores_of

GALLERY_NAME = "index.html"
THUMBS_DIR = ".thumbs"
PAGE_SIZE = 200              # cards per page of the gallery (the script pages them)
GALLERY_THUMB = 256          # long side of the cached thumbnails, pixels
STAT_COLUMNS = ("loss_total", "loss_content", "loss_style", "loss_tv", "temporal_error", "steps", "seconds",
                "device", "cache_hit", "style_distance", "content_distance")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")
CSP = ("default-src 'none'; img-src 'self' file: data:; media-src 'self' file:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


def write_gallery(output_dir: str | Path, thumb: int = GALLERY_THUMB,
                  job_ids: Collection[str] | None = None, live: LiveState | None = None) -> Path:
    """Write `<output_dir>/index.html` (and any missing or stale thumbnails); returns its path.
    `job_ids`: a manifest's jobs only (views/results.py's select_rows); None: every result.

    `live`: the run is still going (views/live.py): the page shows its running jobs and the
    ETA, and reloads itself while `live.active`."""
    root = Path(output_dir)
    results = select_rows(root, job_ids) if (root / INDEX_NAME).is_file() or live is None else []
    thumbs = {r.job_id: ensure_thumb(root, r, thumb) for r in results}
    sheets = sorted(p.name for p in root.glob(f"{SHEET_STEM}*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    reasons = {r.job_id: cell_reason(root, r) for r in results}
    extras = {r.job_id: {**_extras(root, r), **_region_extras(root, r, thumb)} for r in results}
    page = render_html(root.name or str(root), results, thumbs, reasons, sheets, live=live,
                       extras=extras, live_thumbs=_live_thumbs(root, live))
    path = root / GALLERY_NAME
    try:
        atomic_write_bytes(path, page.encode("utf-8"))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


def _extras(root: Path, r: ResultRow) -> dict[str, Any]:
    """What the sidecar holds beyond the index row: the loss history and the stage images."""
    history: dict[str, Any] = {}
    notes: Any = []
    sidecar = inside(root, str(Path(r.output).with_suffix(".json"))) if r.output else None
    if sidecar is not None and sidecar.is_file() and not sidecar.is_symlink():
        try:
            record = json.loads(sidecar.read_text(encoding="utf-8"))
            history, notes = record.get("loss_history") or {}, record.get("notes") or []
        except (OSError, ValueError, AttributeError):
            history = {}
    return {"history": history if isinstance(history, dict) else {},
            "stages": stage_images(root, r.output) if r.output else [],
            "notes": [str(n) for n in notes] if isinstance(notes, list) else []}


def _region_extras(root: Path, r: ResultRow, size: int) -> dict[str, Any]:
    """A region job's map thumbnail (views/region_map.py), half the result's size."""
    if not r.regions:
        return {}
    try:
        return {"region_thumb": ensure_region_thumb(root, r.job_id, r.regions, THUMBS_DIR, max(16, size // 2))}
    except OSError as err:   # a full disk: one line, as for the result's thumbnail
        raise OutputError(f"cannot write the region map of {r.job_id} in {root / THUMBS_DIR}: "
                          f"{err.strerror or err}") from None


def _live_thumbs(root: Path, live: LiveState | None) -> dict[str, str]:
    if live is None:
        return {}
    return {j.job_id: live_thumb(j.job_id) for j in live.running if (root / live_thumb(j.job_id)).is_file()}


def ensure_thumb(root: Path, result: ResultRow, size: int = GALLERY_THUMB) -> str | None:
    """The thumbnail's path relative to `root`, made only when missing or older than the image."""
    if cell_reason(root, result) is not None:
        return None
    image = inside(root, result.output)
    relative = f"{THUMBS_DIR}/{_SAFE_ID.sub('_', result.job_id)}.jpg"
    thumb = root / relative
    if thumb.is_file() and thumb.stat().st_mtime_ns >= image.stat().st_mtime_ns:
        return relative
    if is_clip_output(result.output):
        pil = strip(image, (2 * size, size))   # a clip: a strip of its frames
        if pil is None:
            return None
    else:
        try:
            pil = to_pil(read_image(image, long_side_hint=size))
        except NSTError:
            return None   # unreadable output: the page shows a placeholder that says so
        pil.thumbnail((size, size))
    buffer = io.BytesIO()
    pil.save(buffer, format="JPEG", quality=85)
    try:
        atomic_write_bytes(thumb, buffer.getvalue())
    except OSError as err:   # a full disk: one line from `gallery` and from a run's summary
        raise OutputError(f"cannot write {thumb}: {err.strerror or err}") from None
    return relative


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _url(relative: str) -> str:
    return _e(quote(relative, safe="/"))


def _json_for_script(data: Any) -> str:
    # Inside <script>, "</" could close the element and "<!--" change how it is parsed;
    # escaping every "<", ">" and "&" as \\u escapes keeps the JSON valid and inert.
    text = json.dumps(data, sort_keys=True, ensure_ascii=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def render_html(title: str, results: Sequence[ResultRow], thumbs: Mapping[str, str | None],
                reasons: Mapping[str, str | None], sheets: Sequence[str] = (), live: LiveState | None = None,
                extras: Mapping[str, Mapping[str, Any]] | None = None,
                live_thumbs: Mapping[str, str] | None = None) -> str:
    """The page. Pure: every value from the index is escaped on the way in."""
    extras = extras or {}
    swept = [k for k in varying_keys(results) if k not in IMAGE_KEYS]
    results = reading_order(results, swept)
    filter_keys = [*IMAGE_KEYS, *swept, "status"]
    labels: dict[str, dict[str, str]] = {}
    for r in results:
        labels[r.job_id] = {k: value_label(k, axis_value(r, k)) for k in (*IMAGE_KEYS, *swept)}
        labels[r.job_id]["status"] = r.status
    counts = {s: sum(r.status == s for r in results) for s in ("done", "failed", "timeout")}

    selects = []
    for key in filter_keys:
        values = sorted({labels[r.job_id][key] for r in results}, key=lambda v: _natural(v))
        options = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        selects.append(f'<label>{_e(key)} <select data-key="{_e(key)}"><option value="">all</option>'
                       f'{options}</select></label>')

    front = {r.job_id for r in pareto_front(results)}
    cards = [_scored_card(_card(r, thumbs.get(r.job_id), reasons.get(r.job_id), labels[r.job_id], swept,
                                extras.get(r.job_id, {}), hidden=n >= PAGE_SIZE), r, n, r.job_id in front)
             for n, r in enumerate(results)]
    head = ["job", "status", "content", "style", *swept, *STAT_COLUMNS, "error"]
    header = "".join(f'<th data-col="{_e(h)}">{_e(h)}</th>' for h in head)
    rows = [_table_row(r, labels[r.job_id], swept) for r in results]
    sheet_links = " ".join(f'<a href="{_url(s)}">{_e(s)}</a>' for s in sheets)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"
    plot = _scatter(results, labels, swept)
    return _PAGE.format(
        csp=_e(CSP), title=_e(title), summary=_e(summary), total=len(results), style=_STYLE,
        refresh=(f'<meta http-equiv="refresh" content="{max(1, math.ceil(live.every))}">'
                 if live and live.active else ""),
        live=_live_section(live, live_thumbs or {}), filters="\n".join([*selects, _sort_control(front)]),
        cards="\n".join(cards),
        header=header, rows="\n".join(rows),
        sheets=f"<p>Contact sheets: {sheet_links}</p>" if sheets else "",
        scatter=f'<h2>Style against content loss</h2><div id="scatter">{plot}</div>' if plot else "",
        data=_json_for_script({"jobs": labels}), script=_SCRIPT.replace("PAGE_SIZE_VALUE", str(PAGE_SIZE)))


def _live_section(live: LiveState | None, thumbs: Mapping[str, str]) -> str:
    if live is None:
        return ""
    state = "running" if live.active else "finished"
    head = (f'<section id="live" data-state="{state}"><p class="live-head"><b>Run {state}</b> · '
            f'{_e(live.eta) if live.active else ""} · done {live.done} · failed {live.failed} · '
            f'remaining {live.remaining} of {live.total} · updated {_e(live.updated)}'
            + (f' · this page reloads every {max(1, math.ceil(live.every))} s' if live.active else "") + "</p>")
    cards = []
    for j in live.running:
        stage, stages = j.stage
        src = thumbs.get(j.job_id)
        body = (f'<img src="{_url(src)}?{_e(j.step)}" alt="{_e(j.label)} (latest iterate)">' if src
                else '<div class="ph">starting</div>')
        loss = f" · loss {j.loss:.4g}" if j.loss is not None else ""
        cards.append(f'<figure class="card running" data-running="{_e(j.job_id)}">{body}<figcaption>'
                     f'{_e(j.label)}<br><small>worker {j.worker} {_e(j.device)} · stage {stage}/{stages} · '
                     f'step {j.step}/{j.total}{_e(loss)}</small></figcaption></figure>')
    return head + (f'<div class="grid">{"".join(cards)}</div>' if cards else "") + "</section>"


def _scatter(results: Sequence[ResultRow], labels: Mapping[str, Mapping[str, str]], swept: Sequence[str]) -> str:
    colour_by = swept[0] if swept else ("style" if len({labels[r.job_id]["style"] for r in results}) > 1
                                        else None)
    points = [{"x": r.row.get("loss_content"), "y": r.row.get("loss_style"), "href": f"#job-{r.job_id}",
               "group": labels[r.job_id].get(colour_by, "") if colour_by else "",
               "label": f"{labels[r.job_id]['content']} × {labels[r.job_id]['style']} "
                        + " ".join(f"{k}={labels[r.job_id][k]}" for k in swept)}
              for r in results if r.status == "done" and r.row.get("loss_content") is not None
              and r.row.get("loss_style") is not None]
    return scatter(points, colour_by) if len(points) > 1 else ""


def reading_order(results: Sequence[ResultRow], swept: Sequence[str]) -> list[ResultRow]:
    """Content, then style, by label, then each swept parameter by value (style_weight 1, 2, 3,
    5, 7, 10), as a person reads a sweep; job ids (hashes) would scatter it."""
    def key(r: ResultRow) -> tuple:
        style = axis_value(r, "style")
        return (value_label("content", r.content), r.content, value_label("style", style), str(style),
                *(value_sort_key(axis_value(r, k)) for k in swept), r.job_id)
    return sorted(results, key=key)


def _natural(value: str) -> tuple:
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def _describe(r: ResultRow) -> str:
    """Every parameter, one per line: the tooltip of the image and its link."""
    styles = ", ".join(f"{Path(p).name} ({w:g})" for p, w in r.styles)
    params = [f"{k}={value_label(k, axis_value(r, k))}" for k in sorted(r.params)]
    return "\n".join([f"job {r.job_id} ({r.status})", f"content: {Path(r.content).name}",
                      f"style: {styles}", *(f"region {line}" for line in region_lines(r.regions)), *params])


def _card(r: ResultRow, thumb: str | None, reason: str | None, labels: Mapping[str, str],
          swept: Sequence[str], extra: Mapping[str, Any] | None = None, hidden: bool = False) -> str:
    extra = extra or {}
    caption = f"{labels['content']} × {labels['style']}"
    details = " · ".join([*(f"{k}={labels[k]}" for k in swept), r.status])
    tip = _e(_describe(r))
    if thumb is not None and is_clip_output(r.output):
        # A clip: its mp4, playable in place, above the strip of its frames (views/clips.py).
        body = (f'<video class="clip" controls loop muted preload="metadata" src="{_url(r.output)}" '
                f'title="{tip}"></video><img class="strip" loading="lazy" src="{_url(thumb)}" '
                f'alt="{_e(caption)} (frames)">')
    elif thumb is not None:
        body = (f'<a href="{_url(r.output)}" title="{tip}"><img loading="lazy" src="{_url(thumb)}" '
                f'alt="{_e(caption)}"></a>')
    else:
        body = f'<div class="ph" title="{tip}">{_e(reason or "no image")}</div>'
    stages = extra.get("stages") or []
    if len(stages) > 1:   # the coarse-to-fine stages, left to right
        body += '<div class="stages">' + "".join(
            f'<a href="{_url(s)}"><img loading="lazy" src="{_url(s)}" alt="stage {k + 1}"></a>'
            for k, s in enumerate(stages)) + "</div>"
    # 40 points in whole viewBox units: a curve 200 px wide loses nothing visible, and 2,000
    # cards stay a few MB (docs/running.md, "The live page at 2,000 jobs").
    body += loss_curve(downsample(extra.get("history") or {}, 40))
    body += _regions_block(r, extra) + _notes_block(extra)
    # Beyond the first page: hidden from the first layout on, before the script pages them.
    return (f'<figure class="card {_e(r.status)}" data-job="{_e(r.job_id)}" id="job-{_e(r.job_id)}"'
            f'{" hidden" if hidden else ""}>{body}'
            f'<figcaption>{_e(caption)}<br><small>{_e(details)}</small></figcaption></figure>')


def _regions_block(r: ResultRow, extra: Mapping[str, Any]) -> str:
    """A region job's map beside its legend: each region's colour, name and styles."""
    if not r.regions:
        return ""
    src = extra.get("region_thumb")
    picture = (f'<img class="regionmap" loading="lazy" src="{_url(src)}" alt="region map">' if src
               else '<div class="ph regionmap">mask missing</div>')
    legend = "".join(f'<li><span class="swatch" style="background:{_e(colour)}"></span>{_e(line)}</li>'
                     for line, colour in zip(region_lines(r.regions), region_colours(r.regions)))
    return f'<div class="regions">{picture}<ul class="legend">{legend}</ul></div>'


def _notes_block(extra: Mapping[str, Any]) -> str:
    """What the worker adapted for this job (a mask resized, a region ignored)."""
    notes = extra.get("notes") or []
    return f'<ul class="notes">{"".join(f"<li>{_e(n)}</li>" for n in notes)}</ul>' if notes else ""


# --- scores: a line on each card, the card sort, the Pareto front (docs/quality.md) ------------

SORTS = (("order", "reading order"), ("style_distance", "style_distance (lowest first)"),
         ("content_distance", "content_distance (lowest first)"))


def _sort_control(front: Collection[str]) -> str:
    options = "".join(f'<option value="{k}">{_e(text)}</option>' for k, text in SORTS)
    legend = (f'<p id="pareto-legend"><small><b class="front">&#9733; front</b>: the Pareto front of the '
              f'{len(front)} result(s) no other result shown here beats on both scores (lower is better for '
              'both: style_distance is how far the output\'s VGG feature statistics are from the style\'s, '
              'content_distance how far its conv4_2 features are from the photo\'s; docs/quality.md)</small></p>'
              if front else "")
    return f'<label>sort cards <select id="card-sort">{options}</select></label>{legend}'


def _scored_card(card: str, r: ResultRow, order: int, on_front: bool) -> str:
    """The card with its scores (a line, and data attributes the sort reads) and its front mark."""
    pair = scores_of(r)
    attrs = f' data-order="{order}"'
    if pair is not None:
        attrs += f' data-style_distance="{pair[0]!r}" data-content_distance="{pair[1]!r}"'
        mark = ' <b class="front" title="on the Pareto front">&#9733; front</b>' if on_front else ""
        line = (f'<br><small class="scores">style {pair[0]:.4g} · content {pair[1]:.4g}{mark}</small>'
                "</figcaption>")
        card = card.replace("</figcaption>", line, 1)
    if on_front:
        attrs += ' data-pareto="front"'
    anchor = f'id="job-{_e(r.job_id)}"'
    return card.replace(anchor, anchor + attrs, 1)


def _table_row(r: ResultRow, labels: Mapping[str, str], swept: Sequence[str]) -> str:
    link = (f'<a href="{_url(r.output)}" title="{_e(_describe(r))}">{_e(r.job_id)}</a>'
            if r.status == "done" else _e(r.job_id))
    cells = [(r.job_id, link), (r.status, _e(r.status)), (labels["content"], _e(labels["content"])),
             (labels["style"], _e(labels["style"]))]
    for key in swept:
        value = axis_value(r, key)
        sort = _number(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else labels[key]
        cells.append((sort, _e(labels[key])))
    for key in STAT_COLUMNS:
        value = r.row.get(key)
        cells.append((_number(value) if not isinstance(value, str) else value, _e(_number(value))))
    error = (r.error or "").strip().splitlines()
    cells.append((error[0] if error else "", _e(error[0] if error else "")))
    tds = "".join(f'<td data-sort="{_e(sort)}">{text}</td>' for sort, text in cells)
    return f'<tr data-job="{_e(r.job_id)}">{tds}</tr>'

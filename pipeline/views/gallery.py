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
import re
from pathlib import Path
from typing import Any, Collection, Mapping, Sequence
from urllib.parse import quote

from ..errors import NSTError, OutputError
from ..imaging import atomic_write_bytes, read_image, to_pil
from .results import (IMAGE_KEYS, ResultRow, axis_value, cell_reason, inside, select_rows, value_label,
                      value_sort_key, varying_keys)
from .clips import is_clip_output, strip
from .sheets import SHEET_STEM

GALLERY_NAME = "index.html"
THUMBS_DIR = ".thumbs"
GALLERY_THUMB = 256          # long side of the cached thumbnails, pixels
STAT_COLUMNS = ("loss_total", "loss_content", "loss_style", "loss_tv", "temporal_error", "steps", "seconds",
                "device", "cache_hit")
_SAFE_ID = re.compile(r"[^A-Za-z0-9_-]+")
CSP = ("default-src 'none'; img-src 'self' file: data:; media-src 'self' file:; style-src 'unsafe-inline'; "
       "script-src 'unsafe-inline'")


def write_gallery(output_dir: str | Path, thumb: int = GALLERY_THUMB,
                  job_ids: Collection[str] | None = None) -> Path:
    """Write `<output_dir>/index.html` (and any missing or stale thumbnails); returns its path.
    `job_ids`: a manifest's jobs only (views/results.py's select_rows); None: every result."""
    root = Path(output_dir)
    results = select_rows(root, job_ids)
    thumbs = {r.job_id: ensure_thumb(root, r, thumb) for r in results}
    sheets = sorted(p.name for p in root.glob(f"{SHEET_STEM}*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    reasons = {r.job_id: cell_reason(root, r) for r in results}
    page = render_html(root.name or str(root), results, thumbs, reasons, sheets)
    path = root / GALLERY_NAME
    try:
        atomic_write_bytes(path, page.encode("utf-8"))
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    return path


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
                reasons: Mapping[str, str | None], sheets: Sequence[str] = ()) -> str:
    """The page. Pure: every value from the index is escaped on the way in."""
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

    cards = [_card(r, thumbs.get(r.job_id), reasons.get(r.job_id), labels[r.job_id], swept) for r in results]
    head = ["job", "status", "content", "style", *swept, *STAT_COLUMNS, "error"]
    header = "".join(f'<th data-col="{_e(h)}">{_e(h)}</th>' for h in head)
    rows = [_table_row(r, labels[r.job_id], swept) for r in results]
    sheet_links = " ".join(f'<a href="{_url(s)}">{_e(s)}</a>' for s in sheets)
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n) or "no jobs"
    return _PAGE.format(
        csp=_e(CSP), title=_e(title), summary=_e(summary), total=len(results), style=_STYLE,
        filters="\n".join(selects), cards="\n".join(cards), header=header, rows="\n".join(rows),
        sheets=f"<p>Contact sheets: {sheet_links}</p>" if sheets else "",
        data=_json_for_script({"jobs": labels}), script=_SCRIPT)


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
                      f"style: {styles}", *params])


def _card(r: ResultRow, thumb: str | None, reason: str | None, labels: Mapping[str, str],
          swept: Sequence[str]) -> str:
    caption = f"{labels['content']} × {labels['style']}"
    details = " · ".join([*(f"{k}={labels[k]}" for k in swept), r.status])
    tip = _e(_describe(r))
    if thumb is not None and is_clip_output(r.output):
        # A clip: its mp4, playable in place, above the strip of its frames (views/clips.py).
        body = (f'<video class="clip" controls loop muted preload="metadata" src="{_url(r.output)}" '
                f'title="{tip}"></video><img class="strip" src="{_url(thumb)}" alt="{_e(caption)} (frames)">')
    elif thumb is not None:
        body = (f'<a href="{_url(r.output)}" title="{tip}"><img src="{_url(thumb)}" '
                f'alt="{_e(caption)}"></a>')
    else:
        body = f'<div class="ph" title="{tip}">{_e(reason or "no image")}</div>'
    return (f'<figure class="card {_e(r.status)}" data-job="{_e(r.job_id)}">{body}'
            f'<figcaption>{_e(caption)}<br><small>{_e(details)}</small></figcaption></figure>')


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


_STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
[hidden] { display: none !important; }
#filters label { margin-right: 1em; white-space: nowrap; }
#grid { display: flex; flex-wrap: wrap; gap: 10px; margin: 1em 0; }
.card { margin: 0; width: 200px; }
.card img { width: 200px; height: 150px; object-fit: contain; display: block; background: #ddd; }
.card video.clip { width: 200px; height: 150px; display: block; background: #000; }
.card img.strip { height: 50px; }
.card figcaption { font-size: 12px; overflow-wrap: anywhere; }
.card.failed .ph, .card.timeout .ph { background: #fadede; }
.ph { width: 200px; height: 150px; background: #eee; font-size: 12px; padding: 4px;
      box-sizing: border-box; overflow: hidden; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
"""

_SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("nst-data").textContent);
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-key]"));
  var table = document.getElementById("jobs");

  function visible() {
    return document.querySelectorAll("#grid .card:not([hidden])").length;
  }
  function apply() {
    document.querySelectorAll("[data-job]").forEach(function (el) {
      var labels = data.jobs[el.getAttribute("data-job")] || {};
      el.hidden = !selects.every(function (s) {
        return s.value === "" || labels[s.getAttribute("data-key")] === s.value;
      });
    });
    document.getElementById("shown").textContent = visible();
  }
  selects.forEach(function (s) { s.addEventListener("change", apply); });

  function sortKey(td) {
    var v = td.getAttribute("data-sort");
    var n = Number(v);
    return v !== "" && isFinite(n) ? [0, n, v] : [v === "" ? 2 : 1, 0, v];
  }
  function sortBy(th) {
    var i = Array.prototype.indexOf.call(th.parentNode.children, th);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    table.querySelectorAll("th").forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir === 1 ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a.cells[i]), y = sortKey(b.cells[i]);
      if (x[0] !== y[0]) return x[0] - y[0];   // numbers, then text, then empty cells
      var c = x[0] === 0 ? x[1] - y[1] : x[2].localeCompare(y[2]);
      return dir * c;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  table.querySelectorAll("th").forEach(function (th) { th.addEventListener("click", function () { sortBy(th); }); });

  function selftest() {
    var out = {
      images: Array.prototype.map.call(document.images, function (img) {
        return {src: img.getAttribute("src"), width: img.naturalWidth};
      }),
      visible_before: visible(),
      cards: Array.prototype.map.call(document.querySelectorAll("#grid .card"), function (c) {
        return c.getAttribute("data-job");
      }),
      rows: Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.getAttribute("data-job"); })
    };
    var s = selects.filter(function (x) { return x.options.length > 2; })[0];
    if (s) {
      s.value = s.options[1].value;
      s.dispatchEvent(new Event("change"));
      out.filter = {key: s.getAttribute("data-key"), value: s.value};
      out.visible_after = visible();
      s.value = "";
      s.dispatchEvent(new Event("change"));
    }
    table.querySelector('th[data-col="seconds"]').click();
    out.sorted_by_seconds = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.getAttribute("data-job");
    });
    out.resources = performance.getEntriesByType("resource").map(function (e) { return e.name; });
    out.csp_violations = window.nstViolations;
    out.location = location.href;
    var pre = document.getElementById("selftest");
    pre.textContent = JSON.stringify(out);
    pre.hidden = false;
  }
  if (/[?&]selftest=1\b/.test(location.search) || location.hash === "#selftest") {
    // After load, and a moment later: CSP violation events are delivered asynchronously.
    var later = function () { setTimeout(selftest, 100); };
    if (document.readyState === "complete") later(); else window.addEventListener("load", later);
  }
})();
"""

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} - nst-batch</title>
<style>{style}</style>
<script>
window.nstViolations = [];   /* first, so no blocked request goes unrecorded */
document.addEventListener("securitypolicyviolation", function (e) {{ window.nstViolations.push(e.blockedURI); }});
</script>
</head>
<body>
<h1>{title}</h1>
<p>{summary}; showing <span id="shown">{total}</span> of {total}.</p>
{sheets}
<div id="filters">
{filters}
</div>
<div id="grid">
{cards}
</div>
<h2>Index</h2>
<p><small>Click a column header to sort.</small></p>
<table id="jobs">
<thead><tr>{header}</tr></thead>
<tbody>
{rows}
</tbody>
</table>
<pre id="selftest" hidden></pre>
<script type="application/json" id="nst-data">{data}</script>
<script>{script}</script>
</body>
</html>
"""

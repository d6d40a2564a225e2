"""The gallery page's template, style sheet and script (all inline: the page loads nothing)."""
from __future__ import annotations

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1em; color: #222; }
[hidden] { display: none !important; }
#filters label { margin-right: 1em; white-space: nowrap; }
#grid, .grid { display: flex; flex-wrap: wrap; gap: 10px; margin: 1em 0; }
.card { margin: 0; width: 200px; }
.card img { width: 200px; height: 150px; object-fit: contain; display: block; background: #ddd; }
.card video.clip { width: 200px; height: 150px; display: block; background: #000; }
.card img.strip { height: 50px; }
.card .stages { display: flex; gap: 2px; margin-top: 2px; }
.card .stages img { width: 48px; height: 36px; object-fit: cover; }
.card svg.curve { display: block; width: 200px; height: auto; margin-top: 2px; }
#live { border: 1px solid #9bc; background: #f3f8fb; padding: 0.5em; margin-bottom: 1em; }
.card.running img { width: 200px; height: 150px; object-fit: contain; display: block; background: #ddd; }
#pager button { margin-right: 0.3em; }
.card figcaption { font-size: 12px; overflow-wrap: anywhere; }
.card .regions { display: flex; gap: 4px; margin-top: 2px; font-size: 11px; }
.card .regions img.regionmap, .card .regions .regionmap { width: 64px; height: 48px; object-fit: contain; flex: none; }
.card ul.legend, .card ul.notes { list-style: none; margin: 0; padding: 0; font-size: 11px; }
.card ul.notes { color: #a60; }
.card .swatch { display: inline-block; width: 9px; height: 9px; margin-right: 3px; border: 1px solid #555; }
.card[data-pareto] { outline: 2px solid #c90; }
.front { color: #a70; }
.card.failed .ph, .card.timeout .ph { background: #fadede; }
.ph { width: 200px; height: 150px; background: #eee; font-size: 12px; padding: 4px;
      box-sizing: border-box; overflow: hidden; overflow-wrap: anywhere; }
table { border-collapse: collapse; font-size: 12px; }
th, td { border: 1px solid #ccc; padding: 2px 6px; text-align: left; }
th { cursor: pointer; background: #f4f4f4; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; }
th[aria-sort=descending]::after { content: " \\25BC"; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("nst-data").textContent);
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-key]"));
  var table = document.getElementById("jobs");

  // Cards come in pages of PAGE_SIZE (the rest hidden: a 2,000-job page lays out and loads
  // only one page's images); filters select across all pages, then the pager pages the matches.
  var PAGE_SIZE = PAGE_SIZE_VALUE, page = 0, matched = 0;
  var pager = document.getElementById("pager");
  function visible() {
    return matched;
  }
  function apply() {
    var cards = [];
    document.querySelectorAll("[data-job]").forEach(function (el) {
      var labels = data.jobs[el.getAttribute("data-job")] || {};
      var ok = selects.every(function (s) {
        return s.value === "" || labels[s.getAttribute("data-key")] === s.value;
      });
      if (el.tagName === "FIGURE") { if (ok) cards.push(el); el.hidden = true; } else el.hidden = !ok;
    });
    var pages = Math.max(1, Math.ceil(cards.length / PAGE_SIZE));
    if (page >= pages) page = pages - 1;
    cards.forEach(function (el, i) { el.hidden = Math.floor(i / PAGE_SIZE) !== page; });
    matched = cards.length;
    pager.textContent = "";
    if (pages > 1) {
      for (var k = 0; k < pages; k++) {
        var b = document.createElement("button");
        b.type = "button";
        b.textContent = String(k + 1);
        b.setAttribute("data-page", String(k));
        if (k === page) b.setAttribute("aria-current", "page");
        b.addEventListener("click", function (e) {
          page = Number(e.target.getAttribute("data-page"));
          apply();
        });
        pager.appendChild(b);
      }
    }
    document.getElementById("shown").textContent = matched;
  }
  apply();
  // Cards sorted by a score (lowest first; unscored last) or back to reading order.
  var sorter = document.getElementById("card-sort");
  function sortCards() {
    var key = sorter.value, grid = document.getElementById("grid");
    var cards = Array.prototype.slice.call(grid.querySelectorAll("figure[data-job]"));
    function value(c) {
      var v = c.getAttribute("data-" + key);
      return v === null ? Infinity : Number(v);
    }
    cards.sort(function (a, b) {
      return (value(a) - value(b)) || (Number(a.getAttribute("data-order")) - Number(b.getAttribute("data-order")));
    });
    cards.forEach(function (c) { grid.appendChild(c); });
    page = 0;
    apply();
  }
  if (sorter) sorter.addEventListener("change", sortCards);
  selects.forEach(function (s) { s.addEventListener("change", function () { page = 0; apply(); }); });

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
    out.pages = pager.querySelectorAll("button").length;
    out.on_page = document.querySelectorAll("#grid .card:not([hidden])").length;
    var s = selects.filter(function (x) { return x.options.length > 2; })[0];
    if (s) {
      s.value = s.options[1].value;
      s.dispatchEvent(new Event("change"));
      out.filter = {key: s.getAttribute("data-key"), value: s.value};
      out.visible_after = visible();
      out.pages_after = pager.querySelectorAll("button").length;
      var last = pager.querySelector("button:last-child");
      if (last) last.click();
      out.last_page_cards = Array.prototype.map.call(document.querySelectorAll("#grid .card:not([hidden])"),
                                                     function (c) { return c.getAttribute("data-job"); });
      s.value = "";
      s.dispatchEvent(new Event("change"));
    }
    if (sorter) {
      sorter.value = "style_distance";
      sorter.dispatchEvent(new Event("change"));
      out.cards_by_style = Array.prototype.map.call(document.querySelectorAll("#grid .card"), function (c) {
        return c.getAttribute("data-job");
      });
      sorter.value = "order";
      sorter.dispatchEvent(new Event("change"));
    }
    table.querySelector('th[data-col="seconds"]').click();
    out.sorted_by_seconds = Array.prototype.map.call(table.tBodies[0].rows, function (r) {
      return r.getAttribute("data-job");
    });
    var refresh = document.querySelector("meta[http-equiv=refresh]");
    out.refresh = refresh ? refresh.getAttribute("content") : null;
    out.live_running = Array.prototype.map.call(document.querySelectorAll("#live [data-running]"), function (c) {
      return c.getAttribute("data-running");
    });
    var head = document.querySelector("#live .live-head");
    out.live_head = head ? head.textContent : null;
    out.scatter = Array.prototype.map.call(document.querySelectorAll("#scatter a"), function (a) {
      var href = a.getAttribute("href");
      return {href: href, title: a.querySelector("title").textContent,
              target: !!document.getElementById(href.slice(1))};
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

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
{refresh}
<title>{title} - nst-batch</title>
<style>{style}</style>
<script>
window.nstViolations = [];   /* first, so no blocked request goes unrecorded */
document.addEventListener("securitypolicyviolation", function (e) {{ window.nstViolations.push(e.blockedURI); }});
</script>
</head>
<body>
<h1>{title}</h1>
{live}
<p>{summary}; showing <span id="shown">{total}</span> of {total}.</p>
{sheets}
<div id="filters">
{filters}
</div>
<div id="grid">
{cards}
</div>
<div id="pager"></div>
{scatter}
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

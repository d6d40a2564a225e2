"""The gallery's inline SVG plots and the loss history's downsampling."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from pipeline.views.plots import downsample, loss_curve, scatter

NS = "{http://www.w3.org/2000/svg}"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ', 1))


def test_loss_curve_draws_one_line_per_series_and_marks_stage_changes():
    history = {"step": [1, 2, 3, 4], "stage": [0, 0, 1, 1], "total": [10.0, 5.0, 2.0, 1.0],
               "content": [1.0, 1.0, 0.5, 0.4], "style": [9.0, 4.0, 1.5, 0.6]}
    root = _parse(loss_curve(history))
    lines = root.findall(f"{NS}polyline")
    assert [ln.find(f"{NS}title").text for ln in lines] == ["total", "content", "style"]
    total = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    ys = [p[1] for p in total]
    assert ys == sorted(ys)                   # a falling loss rises on screen (SVG y grows down)
    assert len(root.findall(f"{NS}line")) == 1   # one stage boundary


def test_loss_curve_is_empty_without_history():
    assert loss_curve({}) == ""
    assert loss_curve({"step": [1], "total": [1.0]}) == ""


def test_scatter_has_a_linked_point_per_job_coloured_by_the_varying_value():
    pts = [{"x": 1.0 + i, "y": 10.0 / (i + 1), "label": f"job {i}", "href": f"#job-{i}",
            "group": sw, "front": i == 0} for i, sw in enumerate([10, 50, 200, 10])]
    root = _parse(scatter(pts, "style_weight"))
    links = root.findall(f"{NS}a")
    assert [a.get("href") for a in links] == ["#job-0", "#job-1", "#job-2", "#job-3"]
    fills = [a.find(f"{NS}circle").get("fill") for a in links]
    assert fills[0] == fills[3] and len(set(fills)) == 3
    assert links[0].find(f"{NS}circle/{NS}title").text == "job 0"
    legend = [t.text for t in root.findall(f"{NS}text") if t.text and "style_weight=" in t.text]
    assert legend == ["style_weight=10", "style_weight=50", "style_weight=200"]   # numeric order


def test_downsample_keeps_ends_and_stage_boundaries_within_the_limit():
    n = 2000
    h = {"step": list(range(1, n + 1)), "stage": [0] * 1337 + [1] * (n - 1337),
         "total": [float(i) for i in range(n)]}
    d = downsample(h, limit=300)
    assert len(d["step"]) <= 302
    assert d["step"][0] == 1 and d["step"][-1] == n
    assert 1337 in d["step"]                  # the coarse stage's last evaluation
    assert all(len(v) == len(d["step"]) for v in d.values())
    assert downsample({"step": [1, 2], "total": [1.0, 0.5]}) == {"step": [1, 2], "total": [1.0, 0.5]}

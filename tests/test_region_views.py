"""Region jobs in the views: card lines, the region-map thumbnail, sheet labels, export text."""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from fake_results import finish, manifest
from pipeline.run.index import ResultsIndex
from pipeline.views.export import export
from pipeline.views.gallery import write_gallery
from pipeline.views.region_map import legend, render_map
from pipeline.views.results import axis_value, load_results, value_label


def _masks(root: Path) -> tuple[Path, Path, Path]:
    sky = np.zeros((32, 32), np.uint8); sky[:16] = 255                 # top half
    building = np.zeros((32, 32), np.uint8); building[16:, 16:] = 255  # bottom right
    person = np.zeros((32, 32), np.uint8)
    paths = []
    for name, a in (("sky", sky), ("building", building), ("person", person)):
        p = root / f"{name}.png"
        Image.fromarray(a, "L").save(p)
        paths.append(p)
    return tuple(paths)  # type: ignore[return-value]


def _regions(root: Path) -> list[dict]:
    sky, building, person = _masks(root)
    style = lambda n, w=1.0: {"path": str(root / f"{n}.jpg"), "weight": w, "mask": None}  # noqa: E731
    return [
        {"name": "sky", "mask": str(sky), "labels": None, "colour": "#ff0000", "styles": [style("starry_night")],
         "style_weight": 1.0, "content_weight": None},
        {"name": "building", "mask": str(building), "labels": None, "colour": "#0000ff",
         "styles": [style("a", 0.7), style("b", 0.3)], "style_weight": 1.0, "content_weight": None},
        {"name": "person", "mask": str(person), "labels": None, "colour": None, "styles": [],
         "style_weight": 1.0, "content_weight": 2.0},
    ]


def _region_run(tmp_path: Path) -> tuple[Path, list[dict]]:
    path = manifest(tmp_path, grid="{style_weight: [10]}")
    records = finish(path)
    out = tmp_path / "out"
    regions = _regions(tmp_path)
    with ResultsIndex(out) as index:
        for record in records:
            record.update(regions=regions, notes=["mask person.png is empty: region ignored"])
            (out / record["output"]).with_suffix(".json").write_text(json.dumps(record))
            index.upsert(record)
    return out, regions


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file()}


def test_gallery_card_shows_region_lines_map_and_notes(tmp_path):
    out, _ = _region_run(tmp_path)
    before = _files(tmp_path)
    page = write_gallery(out).read_text(encoding="utf-8")
    assert "sky: starry_night" in page
    assert "building: a 0.7 + b 0.3" in page
    assert "person: photo (content ×2)" in page
    assert "mask person.png is empty: region ignored" in page
    maps = sorted((out / ".thumbs").glob("*.regions.*.png"))
    assert len(maps) == 1 and maps[0].name in page
    written = _files(tmp_path) - before
    assert written and all(out in p.parents for p in written)   # nothing outside the output folder
    pixels = Image.open(maps[0]).convert("RGB")
    w, h = pixels.size
    assert pixels.getpixel((w // 2, h // 4)) == (255, 0, 0)         # sky: its own colour
    assert pixels.getpixel((3 * w // 4, 3 * h // 4)) == (0, 0, 255)  # building
    assert pixels.getpixel((w // 4, 3 * h // 4)) == (128, 128, 128)  # uncovered: grey


def test_map_rebuilt_when_a_mask_changes(tmp_path):
    out, regions = _region_run(tmp_path)
    write_gallery(out)
    first = {p.name for p in (out / ".thumbs").glob("*.regions.*.png")}
    sky = np.zeros((32, 32), np.uint8); sky[:, :8] = 255
    Image.fromarray(sky, "L").save(regions[0]["mask"])
    import os
    st = os.stat(regions[0]["mask"]); os.utime(regions[0]["mask"], ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    write_gallery(out)
    second = {p.name for p in (out / ".thumbs").glob("*.regions.*.png")}
    assert len(second) == 1 and second != first   # new key, old map removed


def test_overlaps_blend(tmp_path):
    a = tmp_path / "a.png"; b = tmp_path / "b.png"
    Image.new("L", (8, 8), 255).save(a); Image.new("L", (8, 8), 255).save(b)
    pil = render_map([{"name": "x", "mask": str(a), "colour": "#ff0000"},
                      {"name": "y", "mask": str(b), "colour": "#0000ff"}], 8)
    assert pil.getpixel((4, 4)) == (128, 0, 128)


def test_label_map_gives_legend_of_three_and_the_map_itself(tmp_path):
    labels = tmp_path / "labels.png"
    img = np.zeros((30, 30, 3), np.uint8)
    img[:10] = (255, 0, 0); img[10:20] = (0, 255, 0); img[20:] = (0, 0, 255)
    Image.fromarray(img, "RGB").save(labels)
    regions = [{"name": n, "mask": None, "labels": str(labels), "colour": c, "styles": s}
               for n, c, s in (("sky", "#ff0000", [{"path": "x/starry.jpg", "weight": 1}]),
                               ("tree", "#00ff00", [{"path": "x/monet.jpg", "weight": 1}]),
                               ("road", "#0000ff", []))]
    assert legend(regions) == [("sky", "#ff0000", "starry"), ("tree", "#00ff00", "monet"), ("road", "#0000ff", "photo")]
    pil = render_map(regions, 15)
    assert pil.size == (15, 15) and pil.getpixel((7, 12)) == (0, 0, 255)


def test_export_regions_column_is_compact_text(tmp_path):
    out, _ = _region_run(tmp_path)
    rows = list(csv.DictReader(io.StringIO(export(out, "csv"))))
    assert rows[0]["regions"] == "sky=starry_night; building=a:0.7+b:0.3; person=none"


def test_sheet_style_label_reads_like_the_card(tmp_path):
    out, _ = _region_run(tmp_path)
    (result,) = load_results(out)
    label = value_label("style", axis_value(result, "style"))
    assert label == "sky: starry_night · building: a 0.7 + b 0.3 · person: photo (content ×2)"

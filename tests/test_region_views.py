"""Region jobs in the views: region lines and summary, the region-map thumbnail, gallery cards,
export's regions column and sheets labelled by region summary. Hand-made output folders (real
index, tiny PIL outputs and masks), no VGG."""
from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import make_content, make_style
from pipeline.run.index import ResultsIndex
from pipeline.views.export import export
from pipeline.views.gallery import write_gallery
from pipeline.views.region_map import (PALETTE, UNCOVERED, ensure_region_thumb, region_lines,
                                       region_map_thumbnail, region_summary)
from pipeline.views.sheet_plan import plan_sheets
from pipeline.views.sheets import load_results, make_sheets

RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def _hex(rgb: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % rgb


def _rgb(colour: str) -> tuple[int, int, int]:
    return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


class RegionRun:
    """A fake output folder of region jobs: inputs, 40 × 20 masks (top half sky, bottom half
    building), a 3-colour label map, tiny outputs, sidecars and a real index."""

    def __init__(self, root: Path):
        self.root = root / "out"
        self.inputs = root / "inputs"
        self.inputs.mkdir(parents=True)
        self.content = str(make_content(self.inputs / "street.png", size=(40, 20)))
        self.style = {n: str(make_style(self.inputs / f"{n}.png", size=(16, 16))) for n in ("starry_night", "a", "b")}
        top = np.zeros((20, 40), np.uint8)
        top[:10] = 255
        self.sky = self.inputs / "sky.png"
        Image.fromarray(top).save(self.sky)
        self.building = self.inputs / "building.png"
        Image.fromarray(255 - top).save(self.building)
        labels = np.zeros((20, 40, 3), np.uint8)
        labels[:10], labels[10:, :20], labels[10:, 20:] = RED, GREEN, BLUE
        self.labels = self.inputs / "street_labels.png"
        Image.fromarray(labels).save(self.labels)
        self.records: list[dict] = []

    def styles(self, *named: tuple[str, float]) -> list[dict]:
        return [{"path": self.style[n], "weight": w, "mask": None} for n, w in named]

    def mask_regions(self, sky_style: str = "starry_night") -> list[dict]:
        return [{"name": "sky", "mask": str(self.sky), "labels": None, "colour": None,
                 "styles": self.styles((sky_style, 1.0)), "style_weight": 1.0, "content_weight": None},
                {"name": "building", "mask": str(self.building), "labels": None, "colour": None,
                 "styles": self.styles(("a", 0.7), ("b", 0.3)), "style_weight": 1.0, "content_weight": None},
                {"name": "person", "mask": None, "labels": None, "colour": None, "styles": [],
                 "style_weight": 1.0, "content_weight": 2.0}]

    def label_regions(self) -> list[dict]:
        return [{"name": name, "mask": None, "labels": str(self.labels), "colour": _hex(colour),
                 "styles": self.styles((style, 1.0)) if style else [], "style_weight": 1.0, "content_weight": None}
                for name, colour, style in (("sky", RED, "starry_night"), ("road", GREEN, "a"), ("person", BLUE, None))]

    def add(self, regions: list[dict] | None, notes: tuple[str, ...] = (), style_weight: float = 1000.0) -> dict:
        job_id = f"{len(self.records):016x}"
        output = f"street/{job_id}.png"
        image = self.root / output
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 20), (90, 90, 200)).save(image)
        styles = [{"path": s["path"], "weight": s["weight"]} for r in regions or () for s in r["styles"]] \
            or [{"path": self.style["starry_night"], "weight": 1.0}]
        record = {"job_id": job_id, "status": "done", "content": self.content, "styles": styles,
                  "params": {"size": 40, "steps": 2, "style_weight": style_weight}, "output": output,
                  "loss_total": 3.0, "loss_content": 1.0, "loss_style": 2.0, "loss_tv": 0.0, "steps": 2,
                  "seconds": 0.5, "device": "cpu", "regions": regions, "notes": list(notes)}
        image.with_suffix(".json").write_text(json.dumps(record))
        self.records.append(record)
        return record

    def write(self) -> Path:
        with ResultsIndex(self.root) as index:
            for record in self.records:
                index.upsert(record)
        return self.root


def test_region_lines_and_summary(tmp_path):
    run = RegionRun(tmp_path)
    regions = run.mask_regions()
    assert region_lines(regions) == ["sky: starry_night", "building: a 0.7 + b 0.3", "person: photo"]
    assert region_summary(regions) == "sky=starry_night; building=a:0.7+b:0.3; person=photo"
    assert region_lines(None) == [] and region_summary(None) == ""


def test_mask_thumbnail_tints_each_region_inside_the_output(tmp_path):
    run = RegionRun(tmp_path)
    relative = ensure_region_thumb(run.root, "0" * 16, run.mask_regions(), ".thumbs", 20)
    assert relative is not None and relative.startswith(".thumbs/0000000000000000.regions.")
    path = (run.root / relative).resolve()
    assert path.is_relative_to(run.root.resolve()) and path.is_file()
    with Image.open(path) as img:
        assert img.size == (20, 10)
        # sky (top) and building (bottom) in the palette's first two colours; person has no mask
        assert img.getpixel((5, 1)) == _rgb(PALETTE[0])
        assert img.getpixel((5, 8)) == _rgb(PALETTE[1])
    # same masks: the same file; a repainted mask: a new one, the stale one removed
    assert ensure_region_thumb(run.root, "0" * 16, run.mask_regions(), ".thumbs", 20) == relative
    half = np.zeros((20, 40), np.uint8)
    half[:, :20] = 255
    Image.fromarray(half).save(run.sky)
    os.utime(run.sky, ns=(1, 1))      # even an older modification time: the size/mtime key changes
    again = ensure_region_thumb(run.root, "0" * 16, run.mask_regions(), ".thumbs", 20)
    assert again != relative and not path.exists()
    with Image.open(run.root / again) as img:
        # left half: sky and building overlap in the bottom rows -> blended; top right: nobody -> grey
        assert img.getpixel((15, 1)) == UNCOVERED
        blend = tuple(round((a + b) / 2) for a, b in zip(_rgb(PALETTE[0]), _rgb(PALETTE[1])))
        assert all(abs(p - q) <= 1 for p, q in zip(img.getpixel((5, 8)), blend))


def test_label_map_thumbnail_is_the_map_reduced_with_nearest(tmp_path):
    run = RegionRun(tmp_path)
    dest = region_map_thumbnail(run.label_regions(), run.root / ".thumbs" / "labels.png", 10)
    with Image.open(dest) as img:
        assert img.size == (10, 5)
        assert {img.getpixel((x, y)) for x in range(10) for y in range(5)} == {RED, GREEN, BLUE}
        assert img.getpixel((2, 0)) == RED and img.getpixel((2, 4)) == GREEN and img.getpixel((8, 4)) == BLUE


def test_missing_mask_gives_no_thumbnail(tmp_path):
    run = RegionRun(tmp_path)
    run.building.unlink()
    assert ensure_region_thumb(run.root, "0" * 16, run.mask_regions(), ".thumbs", 20) is None
    assert region_map_thumbnail(run.mask_regions(), run.root / "x.png", 20) is None
    assert not (run.root / "x.png").exists()


def test_gallery_card_shows_regions_map_legend_and_notes(tmp_path):
    run = RegionRun(tmp_path)
    run.add(run.mask_regions(), notes=("mask sky.png resized from 80×40 to 40×20",))
    run.add(run.label_regions())
    run.add(None)
    page = write_gallery(run.write()).read_text(encoding="utf-8")
    thumbs = sorted(p.relative_to(run.root).as_posix() for p in (run.root / ".thumbs").glob("*.regions.*.png"))
    assert len(thumbs) == 2
    for thumb in thumbs:
        assert f'src="{thumb}"' in page
    for line in ("sky: starry_night", "building: a 0.7 + b 0.3", "person: photo", "road: a"):
        assert f"</span>{line}</li>" in page
    assert f'style="background:{PALETTE[0]}"' in page and 'style="background:#00ff00"' in page
    assert "mask sky.png resized from 80×40 to 40×20" in page
    assert page.count('class="regions"') == 2     # the job without regions has no legend


def test_gallery_says_mask_missing(tmp_path):
    run = RegionRun(tmp_path)
    run.add(run.mask_regions())
    run.write()
    run.sky.unlink()
    page = write_gallery(run.root).read_text(encoding="utf-8")
    assert "mask missing" in page and "sky: starry_night" in page


def test_export_has_the_region_summary_column(tmp_path):
    run = RegionRun(tmp_path)
    run.add(run.mask_regions())
    run.add(None)
    run.write()
    rows = list(csv.DictReader(io.StringIO(export(run.root, "csv"))))
    assert [r["regions"] for r in rows] == ["sky=starry_night; building=a:0.7+b:0.3; person=photo", ""]
    lines = [json.loads(line) for line in export(run.root, "jsonl").splitlines()]
    assert [line["regions"] for line in lines] == ["sky=starry_night; building=a:0.7+b:0.3; person=photo", None]


def test_sheet_of_region_jobs_labels_styles_by_region_summary(tmp_path):
    run = RegionRun(tmp_path)
    for sky in ("starry_night", "a"):
        for weight in (100.0, 1000.0):
            run.add(run.mask_regions(sky_style=sky), style_weight=weight)
    results = load_results(run.write())
    [plan] = plan_sheets(results)
    labels = {plan.rows_key: plan.row_values, plan.cols_key: plan.col_values}
    assert "style" in labels
    from pipeline.views.results import value_label
    assert sorted(value_label("style", v) for v in labels["style"]) == [
        "sky=a; building=a:0.7+b:0.3; person=photo", "sky=starry_night; building=a:0.7+b:0.3; person=photo"]
    sheets = make_sheets(run.root, thumb=64)
    assert sheets and all(Path(p).is_file() for p in sheets)


def test_masks_and_label_map_regions_together(tmp_path):
    run = RegionRun(tmp_path)
    sky = run.mask_regions()[0]
    road = run.label_regions()[1]          # the green pixels of the label map (bottom left)
    with Image.open(region_map_thumbnail([sky, road], run.root / ".thumbs" / "mixed.png", 20)) as img:
        assert img.getpixel((5, 1)) == _rgb(PALETTE[0])       # the sky mask, in the palette's first colour
        assert img.getpixel((5, 8)) == GREEN                  # the road, in its legend colour
        assert img.getpixel((15, 8)) == UNCOVERED             # blue: no region of this job


def test_where_picks_region_jobs_by_their_summary(tmp_path):
    from pipeline.views.sheet_plan import parse_where, select
    run = RegionRun(tmp_path)
    for sky in ("starry_night", "a"):
        run.add(run.mask_regions(sky_style=sky))
    results = load_results(run.write())
    where = parse_where(["style=sky=a; building=a:0.7+b:0.3; person=photo"])
    assert [r.job_id for r in select(results, where)] == [run.records[1]["job_id"]]

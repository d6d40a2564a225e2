"""Contact sheets from a hand-made results index: geometry, placeholders, paging, splitting."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from PIL import Image

from conftest import make_content, make_style
from pipeline.views import sheets
from pipeline.cli import main
from pipeline.errors import InputError, OutputError, ParamError
from pipeline.views.sheets import Layout, load_results, make_sheets, parse_where, plan_sheets

COLUMNS = ("job_id", "status", "content", "styles", "params", "output", "loss_total", "loss_content",
           "loss_style", "loss_tv", "steps", "seconds", "device", "cache_hit", "weights_id", "error",
           "started_at", "finished_at", "width", "height", "attempts")
PARAMS = {"size": 32, "steps": 10, "content_weight": 1.0, "style_weight": 1000.0, "tv_weight": 0.0,
          "content_layers": ["conv4_2"], "style_layers": ["conv1_1", "conv2_1"], "style_layer_weights": None,
          "optimizer": "lbfgs", "lr": None, "init": "content", "seed": 0, "preserve_color": "none",
          "weights": "original", "pooling": "max", "style_scale": 1.0, "multiscale": 1, "format": "png",
          "quality": 95}


class Run:
    """A fake output folder: tiny solid-colour outputs and a `jobs` table like the index's."""

    def __init__(self, root: Path):
        self.root = root / "out"
        self.inputs = root / "inputs"
        self.inputs.mkdir(parents=True, exist_ok=True)
        self.records: list[dict] = []

    def content(self, name: str) -> str:
        path = self.inputs / f"{name}.png"
        if not path.exists():
            make_content(path, size=(32, 24))
        return str(path)

    def style(self, name: str) -> str:
        path = self.inputs / f"{name}.png"
        if not path.exists():
            make_style(path, size=(24, 24))
        return str(path)

    def add(self, content: str, styles: list[str], color: tuple[int, int, int] = (200, 30, 30),
            status: str = "done", error: str | None = None, image: bool = True, seconds: float = 1.0,
            **params) -> dict:
        job_id = f"{len(self.records):016x}"
        content_path = self.content(content)
        style_paths = [self.style(s) for s in styles]
        output = f"{content}/{'+'.join(styles)}/{job_id}.png"
        if image:
            path = self.root / output
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (32, 24), color).save(path)
        record = {
            "job_id": job_id, "status": status, "content": content_path,
            "styles": json.dumps([{"path": p, "weight": 1.0} for p in style_paths]),
            "params": json.dumps({**PARAMS, **params}), "output": output,
            "loss_total": 3.0 + len(self.records) if status == "done" else None,
            "loss_content": 1.0, "loss_style": 2.0, "loss_tv": 0.0, "steps": 10, "seconds": seconds,
            "device": "cpu", "cache_hit": 0, "weights_id": "vgg19-original", "error": error,
            "started_at": "2026-01-01T00:00:00+00:00", "finished_at": "2026-01-01T00:00:01+00:00",
            "width": 32, "height": 24, "attempts": 1, "color": color,
        }
        self.records.append(record)
        return record

    def write(self) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.root / "index.sqlite")
        conn.execute(f"CREATE TABLE jobs ({', '.join(COLUMNS)})")
        conn.executemany(f"INSERT INTO jobs VALUES ({', '.join('?' * len(COLUMNS))})",
                         [tuple(r[c] for c in COLUMNS) for r in self.records])
        conn.commit()
        conn.close()
        return self.root


def content_by_style(tmp_path: Path, contents=("chelsea", "coffee"), styles=("hubble", "wave", "stripes")) -> Run:
    run = Run(tmp_path)
    for i, c in enumerate(contents):
        for j, s in enumerate(styles):
            run.add(c, [s], color=(40 * i + 20, 60 * j + 20, 200))
    return run


# Geometry at thumb=64, derived by hand from the documented layout: font 10 px, a caption
# line of 14 px, margins of 4 px.
T, LINE, M = 64, 14, 4


# Captions, titles and parameter headers wrap (never cut): `caption`, `title` and `header` are
# their line counts, read off the sheets at 64 px ("chelsea, hubble" takes 2 lines).
def expected_size(nrows: int, ncols: int, image_header: bool, caption: int = 2, title: int = 1,
                  header: int = 2) -> tuple[int, int]:
    header_h = max(T + LINE if image_header else 0, header * LINE)
    width = M + T + ncols * (M + T) + M          # row header column, then the cells
    height = M + title * LINE + M + header_h + nrows * (M + T + caption * LINE) + M   # title, header row, cells
    return width, height


def lines(out: Path, **plan: object) -> dict[str, int]:
    """The line counts the sheet of `out` uses (layout_for; tests/test_sheet_titles.py checks them)."""
    lay = sheets.layout_for(plan_sheets(load_results(out), **plan), T)
    return {"caption": lay.caption_lines, "title": lay.title_lines, "header": lay.header_lines}


def cell_center(r: int, c: int, image_header: bool, caption: int = 2, title: int = 1,
                header: int = 2) -> tuple[int, int]:
    header_h = max(T + LINE if image_header else 0, header * LINE)
    x = M + T + M + c * (M + T)
    y = M + title * LINE + M + header_h + M + r * (M + T + caption * LINE)
    return x + T // 2, y + T // 2


def test_layout_constants_at_64_px():
    lay = Layout(64)
    assert (lay.font_size, lay.line_h, lay.margin) == (10, LINE, M)


def test_content_by_style_grid_has_the_computed_size_and_each_output_in_its_cell(tmp_path):
    run = content_by_style(tmp_path)
    out = run.write()
    paths = make_sheets(out, thumb=64)
    assert paths == [out / "contact_sheet.png"]
    with Image.open(paths[0]) as img:
        # The title names size, steps and the non-default style_weight and style_layers; the
        # parameters these records lack (newer than the fake's PARAMS) count as defaults.
        assert lines(out) == {"caption": 2, "title": 2, "header": 2}
        assert img.size == expected_size(2, 3, image_header=True, **lines(out)) == (276, 310)
        for rec in run.records:
            r = ["chelsea", "coffee"].index(rec["output"].split("/")[0])
            c = ["hubble", "stripes", "wave"].index(rec["output"].split("/")[1])   # sorted by label
            assert img.getpixel(cell_center(r, c, True, **lines(out))) == rec["color"]


def test_the_axes_are_labelled_once(tmp_path, monkeypatch):
    out = content_by_style(tmp_path).write()
    drawn: list[str] = []
    monkeypatch.setattr(sheets, "_draw_text", lambda d, xy, text, *a: drawn.append(text))
    make_sheets(out, thumb=64)
    assert [t for t in drawn if "rows" in t or "cols" in t] == ["rows: content", "cols: style"]
    assert " ".join(drawn[:2]).endswith("6 job(s)")                 # the title, wrapped
    assert "none" not in " ".join(drawn[:2])     # parameters a record lacks are at their defaults


def test_parameter_sweep_puts_the_varying_parameters_on_the_axes(tmp_path):
    run = Run(tmp_path)
    for i, sw in enumerate((1e2, 1e3, 1e4)):
        for seed in (0, 1):
            run.add("chelsea", ["wave"], color=(50 * i, 100 + 100 * seed, 7), style_weight=sw, seed=seed)
    out = run.write()
    [plan] = plan_sheets(load_results(out))
    assert (plan.rows_key, plan.cols_key) == ("style_weight", "seed")
    assert plan.row_values == (100.0, 1000.0, 10000.0) and plan.col_values == (0, 1)
    [path] = make_sheets(out, thumb=64)
    with Image.open(path) as img:
        assert img.size == expected_size(3, 2, image_header=False, **lines(out))
        assert img.getpixel(cell_center(2, 1, False, **lines(out))) == (100, 200, 7)


def test_failed_and_missing_cells_are_placeholders_that_say_why(tmp_path, monkeypatch):
    run = content_by_style(tmp_path, styles=("hubble", "wave"))
    run.records[1].update(status="failed", error="DeviceError: CUDA out of memory\ntraceback...")
    Path(run.root / run.records[2]["output"]).unlink()              # done, but the image is gone
    out = run.write()
    drawn: list[str] = []
    real = sheets._draw_text
    monkeypatch.setattr(sheets, "_draw_text", lambda d, xy, text, *a: (drawn.append(text), real(d, xy, text, *a)))
    [path] = make_sheets(out, thumb=64)
    with Image.open(path) as img:
        n = lines(out)
        failed = img.getpixel(cell_center(0, 1, True, **n))
        assert failed != run.records[1]["color"] and failed == sheets.FAILED_FILL
        assert img.getpixel((cell_center(1, 0, True, **n)[0] + 20, cell_center(1, 0, True, **n)[1] + 20)) == sheets.MISSING_FILL
        assert img.getpixel(cell_center(0, 0, True, **n)) == run.records[0]["color"]
    text = " ".join(drawn)
    assert "failed:" in drawn and "CUDA out of" in text and "traceback" not in text
    assert "missing:" in text and "0000000000000002.png" in text.replace(" ", "")
    assert {"chelsea", "coffee", "hubble", "wave"} <= set(drawn)                  # header labels


def test_a_gone_input_is_drawn_as_its_name(tmp_path, monkeypatch):
    run = content_by_style(tmp_path, contents=("chelsea",), styles=("hubble", "wave"))
    out = run.write()
    Path(run.inputs / "hubble.png").unlink()
    drawn: list[str] = []
    monkeypatch.setattr(sheets, "_draw_text", lambda d, xy, text, *a: drawn.append(text))
    make_sheets(out, thumb=64)
    assert "hubble.png" in drawn and "(input" in drawn


def test_large_grids_are_split_into_pages(tmp_path):
    run = content_by_style(tmp_path, contents=("a", "b", "c"), styles=("x", "y", "z"))
    out = run.write()
    paths = make_sheets(out, thumb=64, max_cells_per_page=4)     # 3 columns fit, so 1 row a page
    assert paths == [out / f"contact_sheet_p{i}.png" for i in (1, 2, 3)]
    for path in paths:
        with Image.open(path) as img:
            assert img.size == expected_size(1, 3, True, **lines(out, max_cells_per_page=4))
    plans = plan_sheets(load_results(out), max_cells_per_page=2)      # 2 columns, then 1
    assert [(len(p.row_values), len(p.col_values)) for p in plans] == [(1, 2), (1, 1)] * 3
    assert plans[0].title.endswith("page 1/6")


def test_a_long_single_row_sweep_is_split_into_readable_pages(tmp_path):
    run = Run(tmp_path)
    for seed in range(25):
        run.add("chelsea", ["wave"], seed=seed, image=False)
    plans = plan_sheets(load_results(run.write()))            # at most 2·√100 = 20 columns a page
    assert [(p.rows_key, p.cols_key) for p in plans] == [("content", "seed")] * 2
    assert [p.col_values for p in plans] == [tuple(range(20)), tuple(range(20, 25))]
    assert [p.file_name("contact_sheet", ".png") for p in plans] == ["contact_sheet_p1.png", "contact_sheet_p2.png"]


def test_a_third_varying_key_makes_one_sheet_per_value(tmp_path):
    run = Run(tmp_path)
    for seed in (0, 1):
        for c in ("chelsea", "coffee"):
            for s in ("hubble", "wave"):
                run.add(c, [s], color=(seed * 200, 10, 10), seed=seed)
    out = run.write()
    paths = make_sheets(out, thumb=64)
    assert paths == [out / "contact_sheet_seed-0.png", out / "contact_sheet_seed-1.png"]
    for seed, path in enumerate(paths):
        with Image.open(path) as img:
            assert img.size == expected_size(2, 2, True, **lines(out))
            assert img.getpixel(cell_center(1, 1, True, **lines(out))) == (seed * 200, 10, 10)
    [only] = make_sheets(out, thumb=64, where={"seed": "1"}, dest=tmp_path / "one.jpg")
    assert only == tmp_path / "one.jpg"
    with Image.open(only) as img:
        assert img.format == "JPEG" and img.size == expected_size(2, 2, True, **lines(out, where={"seed": "1"}))


def test_too_many_values_per_cell_is_reported_with_the_where_fix(tmp_path):
    run = Run(tmp_path)
    for seed in range(25):
        run.add("chelsea", ["wave"], seed=seed, steps=10 + seed % 2, image=False)
    run.add("coffee", ["wave"], seed=0, image=False)
    out = run.write()
    with pytest.raises(ParamError) as err:
        make_sheets(out, rows="content", cols="style")
    assert str(err.value) == (
        "more than one job per cell of rows=content × cols=style: steps (10, 11); seed (0, 1, 2, 3, 4, ...) "
        "also vary, which would make 25 sheets (at most 24); pick values with --where "
        "(e.g. --where steps=10 --where seed=0) or put a key on --rows/--cols")
    assert len(make_sheets(out, rows="content", cols="style", where={"steps": "10", "seed": "0"}, thumb=64)) == 1


def test_where_and_key_errors_name_the_fix(tmp_path):
    out = content_by_style(tmp_path).write()
    results = load_results(out)
    with pytest.raises(ParamError, match=r"^--where 'seed': expected KEY=VALUE, e.g. --where seed=0$"):
        parse_where(["seed"])
    assert parse_where(["seed=0", "style=a+b", "seed=1"]) == {"seed": ["0", "1"], "style": "a+b"}
    with pytest.raises(ParamError) as err:
        plan_sheets(results, where={"colour": "red"})
    assert str(err.value).startswith("--where colour: unknown key; use content, style or a parameter (size, steps,")
    with pytest.raises(ParamError) as err:
        plan_sheets(results, where={"style": "monet"})
    assert str(err.value) == "--where style=monet: no job has that value; style is one of: hubble, stripes, wave"
    with pytest.raises(ParamError, match=r"^--rows and --cols are both 'seed'; choose two different keys$"):
        plan_sheets(results, rows="seed", cols="seed")
    [plan] = plan_sheets(results, where={"content": "coffee", "style": ["wave", "hubble"]})
    assert len(plan.row_values) == 1 and len(plan.col_values) == 2


def test_missing_index_and_bad_destination(tmp_path):
    with pytest.raises(InputError) as err:
        make_sheets(tmp_path)
    assert str(err.value) == (f"no results index in {tmp_path} (index.sqlite is missing); "
                              "run `nst-batch run MANIFEST` first or check the folder")
    out = content_by_style(tmp_path).write()
    with pytest.raises(OutputError, match=r"unsupported sheet format '.gif'; use .png, .jpg or .jpeg$"):
        make_sheets(out, dest=tmp_path / "sheet.gif")
    with pytest.raises(ParamError, match=r"^--thumb must be between 32 and 1024 pixels, got 8$"):
        make_sheets(out, thumb=8)


def test_sheet_command_prints_the_files_and_errors_in_one_line(tmp_path, capsys):
    out = content_by_style(tmp_path).write()
    main(["sheet", str(out), "--thumb", "64", "--where", "content=chelsea", "-o", str(tmp_path / "s.png")])
    assert capsys.readouterr().out.splitlines() == [str(tmp_path / "s.png")]
    with pytest.raises(SystemExit) as exit_:
        main(["sheet", str(out), "--rows", "colour"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --rows 'colour': unknown key;") and err.count("\n") == 1

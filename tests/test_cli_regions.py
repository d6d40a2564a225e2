"""`stylize --region [NAME:]MASK=STYLE`: parsing, and bad masks refused in one line before torch."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from conftest import make_content, make_style
from pipeline.cli_regions import parse_region, region_specs
from pipeline.errors import ParamError
from test_fast_commands import heavy, run_cli


def test_parse_region_forms():
    assert parse_region("masks/sky.png=styles/a.jpg") == (None, "masks/sky.png", ["styles/a.jpg"])
    assert parse_region("sky:masks/sky.png=none") == ("sky", "masks/sky.png", [])
    assert parse_region("masks/b.png=a.jpg+b.jpg") == (None, "masks/b.png", ["a.jpg", "b.jpg"])
    specs = region_specs(["m/sky.png=a.jpg", "other/sky.png=none", "x:m/g.png=b.jpg+c.jpg"])
    assert [(s.name, s.mask, [r.path for r in s.styles]) for s in specs] == [
        ("sky", "m/sky.png", ["a.jpg"]), ("sky-2", "other/sky.png", []), ("x", "m/g.png", ["b.jpg", "c.jpg"])]
    with pytest.raises(ParamError, match=r"expected \[NAME:\]MASK=STYLE"):
        parse_region("masks/sky.png")
    with pytest.raises(ParamError, match="used twice"):
        region_specs(["a:m.png=none", "a:n.png=none"])


@pytest.fixture
def files(tmp_path: Path) -> Path:
    make_content(tmp_path / "photo.png")                  # 48 × 40
    make_style(tmp_path / "wave.png")
    Image.new("L", (20, 40), 255).save(tmp_path / "tall.png")
    return tmp_path


@pytest.mark.parametrize("args, line", [
    (["--region", "tall.png=wave.png"], "error: --region tall: mask tall.png is 20 × 40 px, aspect 0.500, but its image "
                                        "is 48 × 40 px, aspect 1.200; draw the mask on the same frame (same aspect ratio)"),
    (["--region", "sky:gone.png=wave.png"], "error: --region sky: mask not found: gone.png"),
    (["wave.png", "--region", "tall.png=none"], "error: give one or more style images, or --region MASK=STYLE "
                                                "(each region names its style), not both"),
    ([], "error: give one or more style images, or --region MASK=STYLE"),
])
def test_bad_region_is_one_line_without_torch(files, args, line):
    proc, imported = run_cli("stylize", "photo.png", *args, "-o", "out.png", cwd=files)
    assert proc.returncode == 2
    assert [l for l in proc.stderr.splitlines() if not l.startswith("import time:")] == [line]
    assert heavy(imported) == []

"""`make run`'s inputs: the demo copies its images, ships The Starry Night small, and plans 6 jobs."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from PIL import Image

from pipeline import demo
from pipeline.run.orchestrate import prepare

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_copies_its_inputs_and_its_manifest_makes_six_jobs(tmp_path):
    pytest.importorskip("skimage")
    inputs = demo.materialize(tmp_path)
    assert sorted(p.name for p in (inputs / "content").iterdir()) == ["astronaut.png", "chelsea.png", "coffee.png"]
    assert sorted(p.name for p in (inputs / "style").iterdir()) == ["ihc.png", "starry_night.jpg"]
    assert (inputs / "style" / "starry_night.jpg").read_bytes() == demo.PAINTING.read_bytes()
    with Image.open(demo.PAINTING) as painting:
        assert max(painting.size) <= 512 and painting.format == "JPEG"   # the one shipped image stays small
    (tmp_path / "manifests").mkdir()
    shutil.copyfile(REPO / "manifests" / "demo.yaml", tmp_path / "manifests" / "demo.yaml")
    _, jobs = prepare(tmp_path / "manifests" / "demo.yaml")
    assert len(jobs) == 6
    assert {Path(s.path).name for j in jobs for s in j.styles} == {"ihc.png", "starry_night.jpg"}

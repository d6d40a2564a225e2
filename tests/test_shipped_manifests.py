"""Every manifest in manifests/ validates from a fresh clone, once the sample inputs are made the
way `make run` (pipeline/demo.py) and `make run-video` (pipeline/video_demo.py) make them."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipeline import demo, video_demo
from pipeline.errors import ManifestError
from pipeline.manifest.schema import load_manifest
from pipeline.run.orchestrate import prepare

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "manifests").glob("*.yaml"))


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """What a fresh clone holds that the manifests read (manifests/, pipeline/demo_assets/), plus
    the sample folders the two demos write: no file of an earlier `make run` is used."""
    root = tmp_path_factory.mktemp("clone")
    shutil.copytree(ROOT / "manifests", root / "manifests")
    shutil.copytree(ROOT / "pipeline" / "demo_assets", root / "pipeline" / "demo_assets")
    demo.materialize(root)
    try:
        video_demo.materialize(root)
    except SystemExit as missing:   # the video extra is not installed: video_demo.yaml is skipped
        (root / "no-video").write_text(str(missing))
    return root


def test_there_are_manifests():
    assert {m.name for m in MANIFESTS} >= {"blend.yaml", "demo.yaml", "folder.yaml", "grid.yaml"}


@pytest.mark.parametrize("name", [m.name for m in MANIFESTS])
def test_shipped_manifest_validates(clone, name):
    if name == "video_demo.yaml" and (clone / "no-video").exists():
        pytest.skip((clone / "no-video").read_text())
    manifest, jobs = prepare(clone / "manifests" / name)
    assert jobs, name
    for job in jobs:   # every input is inside the clone: nothing from outside it
        assert Path(job.content).is_relative_to(clone.resolve()), job.content


def test_without_the_sample_folders_the_error_says_what_is_missing(tmp_path):
    shutil.copytree(ROOT / "manifests", tmp_path / "manifests")
    shutil.copytree(ROOT / "pipeline" / "demo_assets", tmp_path / "pipeline" / "demo_assets")
    with pytest.raises(ManifestError) as err:
        load_manifest(tmp_path / "manifests" / "folder.yaml")
    assert "out/demo/inputs/content" in str(err.value)

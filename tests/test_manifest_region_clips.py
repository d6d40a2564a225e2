"""A clip with regions in a manifest: one mask for every frame, or a folder of one per frame.

The engine side (run/regions.py ClipRegions) is tested in tests/test_regions_clips_memory.py;
here the manifest reaches it: the job is a clip job with its regions, its id follows the mask
folder's bytes, and a real run stylizes every frame.
"""
from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from conftest import make_content, make_style
from pipeline.manifest.schema import expand, load_manifest


def _project(tmp_path: Path) -> Path:
    frames, masks = tmp_path / "walk", tmp_path / "walk_masks"
    frames.mkdir()
    masks.mkdir()
    for t in range(3):
        make_content(frames / f"f{t:03d}.png", (40, 32), seed=t)
        m = Image.new("L", (40, 32), 0)
        m.paste(255, (0, 0, 20 + 4 * t, 32))          # the left part, growing frame by frame
        m.save(masks / f"m{t:03d}.png")
    make_style(tmp_path / "a.png", seed=1)
    (tmp_path / "m.yaml").write_text(
        "version: 1\noutput: out\ncontent:\n"
        "  - frames: walk/\n    fps: 8\n    regions:\n"
        "      left: {mask: walk_masks/, style: a.png}\n"
        "params: {size: 32, steps: 3, multiscale: 1, style_layers: [conv1_1, conv2_1], temporal_weight: 0}\n"
        "devices: cpu\n")
    return tmp_path / "m.yaml"


def test_a_clip_with_a_mask_folder_is_one_clip_job_with_its_regions(tmp_path):
    manifest = load_manifest(_project(tmp_path))
    jobs = expand(manifest)
    assert len(jobs) == 1
    job = jobs[0]
    assert job.clip is not None and job.clip.kind == "frames"
    assert [r.name for r in job.regions] == ["left"]
    assert job.regions[0].mask == str((tmp_path / "walk_masks").resolve())
    # Repainting one frame's mask changes the job's id (the folder's files are hashed).
    before = job.job_id
    Image.new("L", (40, 32), 255).save(tmp_path / "walk_masks" / "m001.png")
    assert expand(load_manifest(tmp_path / "m.yaml"))[0].job_id != before


def test_a_clip_with_regions_runs_every_frame(tmp_path):
    from pipeline.run.orchestrate import RunOptions, run_manifest

    path = _project(tmp_path)
    summary = run_manifest(path, RunOptions(live=False, workers=1))
    assert summary["done"] == 1
    sidecars = [p for p in (tmp_path / "out").rglob("*.json")
                if p.name != "frames.json" and json.loads(p.read_text()).get("job_id")]
    record = json.loads(sidecars[0].read_text())
    assert record["status"] == "done", record.get("error")
    assert record["regions"][0]["name"] == "left"
    assert len(record["clip"]["frames"]) == 3

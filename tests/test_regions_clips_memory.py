"""Regions in clips (one mask for every frame, or a folder of one per frame) and the memory
a job's masks hold, counted alike by `plan` and the worker (run/held.py)."""
from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_content, make_style
from pipeline.engine.objective import Objective
from pipeline.engine.style_loss import StyleRegion
from pipeline.params import Params
from pipeline.run import held
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import RegionSpec, StyleRef, make_job
from pipeline.run.worker import JobRunner
from pipeline.video import Clip

CPU = torch.device("cpu")


def _mask(path: Path, w: int, h: int, left: bool = True) -> str:
    a = np.zeros((h, w), np.uint8)
    a[:, : w // 2] = 255
    Image.fromarray(a if left else 255 - a).save(path)
    return str(path)


def _with_regions(job, regions):
    tag = hashlib.sha256(repr(regions).encode()).hexdigest()[:6]
    job_id = job.job_id[:10] + tag
    return replace(job, job_id=job_id, output=job.output.replace(job.job_id, job_id), regions=regions)


@pytest.fixture
def clip(tmp_path):
    folder = tmp_path / "walk"
    folder.mkdir()
    for t in range(3):
        make_content(folder / f"walk_{t + 1:04d}.png", (32, 32), seed=t)
    return folder, str(make_style(tmp_path / "s.png"))


def _run_clip(tmp_path, folder, style, mask) -> dict:
    pytest.importorskip("cv2")
    job = make_job(folder, [(style, 1.0)], Params(size=32, steps=3, multiscale=1), clip=Clip("frames", str(folder)))
    job = _with_regions(job, (RegionSpec("left", (StyleRef(style),), mask=mask),))
    records = []
    JobRunner(CPU, StyleTargetCache(tmp_path / "cache")).run_group(
        [job], tmp_path / "out", lambda e: records.append(e[2]) if e[0] == "record" else None)
    return records[0].as_dict()


def test_a_clip_takes_one_mask_for_every_frame_or_one_per_frame(tmp_path, clip):
    folder, style = clip
    one = _run_clip(tmp_path, folder, style, _mask(tmp_path / "m.png", 32, 32))
    assert one["status"] == "done" and one["clip"]["frame_count"] == 3 and one["notes"] == []
    masks = tmp_path / "masks"
    masks.mkdir()
    for t in range(3):
        _mask(masks / f"m{t}.png", 16, 16, left=t != 1)   # half size: resized, noted once
    per_frame = _run_clip(tmp_path, folder, style, str(masks))
    assert per_frame["status"] == "done"
    assert per_frame["notes"] == [f"mask {masks / 'm0.png'} resized from 16×16 to 32×32"]
    # The second frame's mask is the other half: its result differs from the one-mask run's.
    assert per_frame["clip"]["frames"][1]["loss_total"] != pytest.approx(one["clip"]["frames"][1]["loss_total"], rel=1e-3)


def test_a_mask_folder_whose_count_differs_from_the_clips_frames_fails_in_one_line(tmp_path, clip):
    folder, style = clip
    masks = tmp_path / "masks"
    masks.mkdir()
    for t in range(2):
        _mask(masks / f"m{t}.png", 32, 32)
    record = _run_clip(tmp_path, folder, style, str(masks))
    assert record["status"] == "failed"
    assert record["error"] == (f"mask folder {masks} holds 2 masks but the clip has 3 frames; give one mask per "
                               "frame (sorted by name), or one mask file for every frame")


def test_masks_held_are_counted_for_plan_and_worker_and_cover_what_the_objective_builds(tmp_path, feats):
    content = str(make_content(tmp_path / "c.png", (80, 60)))
    style = str(make_style(tmp_path / "s.png"))
    p = Params(size=80, steps=1, multiscale=1)
    plain = make_job(content, [(style, 1.0)], p)
    regions = (RegionSpec("a", (StyleRef(style),), mask=_mask(tmp_path / "a.png", 80, 60)),
               RegionSpec("b", (StyleRef(style, mask=_mask(tmp_path / "sm.png", 40, 40)),),
                          mask=_mask(tmp_path / "b.png", 80, 60, left=False)),
               RegionSpec("keep", (), mask=_mask(tmp_path / "k.png", 80, 60), content_weight=4.0))
    job = _with_regions(plain, regions)
    extra = held.job_held_bytes(job) - held.job_held_bytes(plain)
    assert extra == held.region_held_bytes(job) > 0
    # What is alive: three masks, the weight map and the photo map at 80 × 60, the style mask at
    # the style's 40 × 40, and per stage the objective's guidance of two styled regions, the
    # content map's and the photo map at the output size (80 × 60 too).
    masks = [torch.rand(1, 1, 60, 80) for _ in range(2)]
    targets = {n: torch.eye(c)[None] for n, c in zip(p.style_layers, (64, 128, 256, 512, 512))}
    with torch.no_grad():
        content_targets = feats(torch.rand(1, 3, 60, 80), list(p.content_layers))
    objective = Objective(feats, content_targets, [[StyleRegion(targets, m) for m in masks]], [p],
                          content_weight_maps=[torch.ones(1, 1, 60, 80)])
    at = objective.at_size(60, 80)
    guidance = sum(g.numel() for slot in at["guides"] for g in slot.values())
    guidance += sum(g.numel() for g in at["content"].values())
    alive = 4 * (6 * 60 * 80 + 40 * 40 + guidance)
    assert alive <= extra <= 1.5 * alive

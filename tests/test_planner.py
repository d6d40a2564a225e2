"""The memory planner's plumbing and the new keys: size native, multiscale auto, memory_limit,
the plan in the sidecar and in `plan`, and a planned tiled run that equals the whole one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import make_content, make_style
from pipeline.errors import ManifestError, ParamError
from pipeline.manifest.schema import load_manifest
from pipeline.params import Params, params_from_mapping
from pipeline.run import memory
from pipeline.run.cache import StyleTargetCache
from pipeline.run.jobs import make_job
from pipeline.run.orchestrate import plan_manifest
from pipeline.run.worker import JobRunner


def test_multiscale_auto_starts_near_256_px_and_halves_the_budget_per_stage():
    assert Params().multiscale == "auto"
    assert Params(size=64).stage_sizes() == [64] and Params(size=64).stage_steps() == [400]
    assert Params(size=256).stage_sizes() == [128, 256] and Params(size=256).stage_steps() == [267, 133]
    assert Params(size=512).stage_sizes() == [256, 512]
    assert Params(size=1536).stage_sizes() == [192, 384, 768, 1536]
    assert Params(size=1536).stage_steps() == [215, 106, 53, 26]
    assert Params(size=4032).stage_steps() == [209, 103, 51, 25, 12]
    assert Params(size=1536, steps=4).stage_steps() == [1, 1, 1, 1]
    assert Params(size=512, multiscale=3).stage_steps() == [133, 133, 134]   # a forced count: even
    assert Params(size=512, multiscale=1).stage_sizes() == [512]
    with pytest.raises(ParamError, match="multiscale: expected an integer"):
        params_from_mapping({"multiscale": "fast"})


def test_size_native_is_the_content_images_own_long_side(tmp_path):
    content = make_content(tmp_path / "c.png", (72, 40))
    style = make_style(tmp_path / "s.png")
    job = make_job(content, [(style, 1.0)], params_from_mapping({"size": "native"}))
    assert job.params.size == 72
    assert job.job_id == make_job(content, [(style, 1.0)], params_from_mapping({"size": 72})).job_id


def _manifest(root: Path, extra: str) -> Path:
    make_content(root / "c.png", (48, 40))
    make_style(root / "s.png")
    path = root / "m.yaml"
    path.write_text(f"version: 1\noutput: out\ncontent: [c.png]\nstyle: [s.png]\nparams: {{size: native, steps: 2}}\n"
                    f"devices: cpu\n{extra}")
    return path


def test_manifest_memory_limit_is_parsed_or_named_in_the_error(tmp_path):
    assert load_manifest(_manifest(tmp_path, "memory_limit: 1.5GB\n")).memory_limit == 1_500_000_000
    assert load_manifest(_manifest(tmp_path, "")).memory_limit is None
    with pytest.raises(ManifestError, match=r"memory_limit: expected a size like 2GB, 1\.5GiB or 800MB, got 'lots'"):
        load_manifest(_manifest(tmp_path, "memory_limit: lots\n"))


def test_plan_shows_the_memory_plan_per_job(tmp_path):
    plan = plan_manifest(_manifest(tmp_path, "memory_limit: 2GB\n"))
    assert plan["memory_budget"] == 2 * 10**9 - memory.CPU_WORKER_BASE    # a CPU limit covers the worker
    [row] = plan["memory"]
    assert row["size"] == "48×40" and row["jobs"] == 1 and row["mode"] == "whole"
    assert row["optimizer"] == "lbfgs (history 100)" and 0 < row["peak"] < 2 * 10**9


def test_a_tiled_plan_runs_in_tiles_gives_the_whole_result_and_is_in_the_sidecar(tmp_path, monkeypatch):
    content = make_content(tmp_path / "c.png", (64, 48))
    style = make_style(tmp_path / "s.png")
    job = make_job(content, [(style, 1.0)], params_from_mapping({"size": 64, "steps": 3}))
    runner = JobRunner(torch.device("cpu"), StyleTargetCache(tmp_path / "cache"), memory_limit=8 * 10**9)
    whole = runner.run(job, tmp_path / "whole.png", tmp_path / "whole.json")
    assert json.loads((tmp_path / "whole.json").read_text())["memory_plan"]["mode"] == "whole"
    seen = []
    real = memory.plan_job

    def tiny_tiles(params, shape, budget, bf16=False, held=0):
        seen.append((budget, held))
        plan = real(params, shape, budget, bf16)
        return memory.MemoryPlan((16,), 32, "lbfgs", 100, plan.peak, budget, ("tiles of 16 px (test)",))

    monkeypatch.setattr(memory, "plan_job", tiny_tiles)
    tiled = runner.run(job, tmp_path / "tiled.png", tmp_path / "tiled.json")
    [(budget, held)] = seen            # the limit covers the whole worker: less what it holds
    assert budget + held == 8 * 10**9 and 10**8 < held < 4 * 10**9
    sidecar = json.loads((tmp_path / "tiled.json").read_text())["memory_plan"]
    assert sidecar["mode"] == "tiles of 16 px" and sidecar["tiles"] == [16] and sidecar["notes"] == ["tiles of 16 px (test)"]
    assert tiled["loss_total"] == pytest.approx(whole["loss_total"], rel=1e-4)


@pytest.mark.parametrize("size,limit_gb", [(1536, 1.1), (4032, 3.1), (4032, 8.0), (8192, 20.0), (2048, 0.9)])
def test_every_stage_of_a_plan_fits_in_the_share_of_the_budget_it_may_fill(size, limit_gb):
    """The planner leaves 1 − PLAN_FRACTION of the budget to the allocator, at every stage (a
    coarse stage in large tiles can peak higher than the final one) and for the style Grams."""
    params, shape, budget = Params(size=size), (3024, 4032), int(limit_gb * 1e9)
    plan = memory.plan_job(params, shape, budget)
    room = memory.PLAN_FRACTION * budget
    for side, tile in zip(params.stage_sizes(shape), plan.tiles):
        need = memory.estimate_bytes(params.replace(size=side), shape, 1, False, plan.history, tile, plan.optimizer)
        assert need <= room, (side, tile, need, room)
    assert memory.style_bytes(params, plan.style_tile) <= room
    assert plan.peak <= room and plan.budget == budget

"""Sizes the device cannot hold: refused before the job starts, with the largest that fits."""
from __future__ import annotations

import re

import pytest
import torch

from pipeline.run import memory
from pipeline.cli import main
from pipeline.errors import DeviceError
from pipeline.run.memory import SLACK, estimate_bytes, free_bytes, plan_job
from pipeline.params import params_from_mapping

GB = 10**9


def params(**values):
    return params_from_mapping({"size": 512, "steps": 400, **values})


def test_the_estimate_grows_with_the_pixels_the_history_and_the_batch():
    small, large = estimate_bytes(params(size=256)), estimate_bytes(params(size=512))
    assert 3.8 < (large - SLACK) / (small - SLACK) < 4.2          # four times the pixels
    wide = estimate_bytes(params(size=512), shape=(256, 512))       # same long side, half the pixels
    assert 0.45 < (wide - SLACK) / (large - SLACK) < 0.55
    assert estimate_bytes(params(steps=10)) == estimate_bytes(params(steps=400))     # history allocated up front
    assert estimate_bytes(params(optimizer="adam")) < estimate_bytes(params())
    one, four = estimate_bytes(params()), estimate_bytes(params(), batch=4)
    assert four - SLACK == pytest.approx(4 * (one - SLACK), rel=1e-6)
    half = estimate_bytes(params(optimizer="adam"), bf16=True)    # bf16 autocast: 2-byte activations
    assert 0.5 < (half - SLACK) / (estimate_bytes(params(optimizer="adam")) - SLACK) < 0.55
    shallow = estimate_bytes(params(style_layers=["conv1_1"], content_layers=["conv1_2"]))
    assert shallow < estimate_bytes(params())
    # Calibrated against peak RSS on CPU above the loaded network, 512 px: Adam used 703 MiB,
    # L-BFGS 1354 MiB. The estimate may be a little above, never below.
    assert 703 * 2**20 <= estimate_bytes(params(optimizer="adam", steps=2)) <= 1.15 * 703 * 2**20
    assert 1354 * 2**20 <= estimate_bytes(params(steps=5)) <= 1.15 * 1354 * 2**20


def test_refusal_names_the_need_the_budget_and_the_largest_size_that_fits():
    p = params(size=16000)
    with pytest.raises(DeviceError) as err:
        plan_job(p, (3000, 4000), 3 * GB)
    message = str(err.value)
    best = int(re.search(r"the largest that fits is about (\d+) px", message).group(1))
    # The need is stated as a budget: the planner fills at most PLAN_FRACTION of one.
    least = estimate_bytes(p, (3000, 4000), history=0, tile=memory.MIN_TILE, optimizer="adam") / memory.PLAN_FRACTION
    assert message == (f"size 16000 needs at least {memory._gb(least)} GB even in tiles with Adam, the memory budget "
                       f"is 3.0 GB; the largest that fits is about {best} px; lower size or raise --memory-limit")
    assert best % 16 == 0
    plan = plan_job(p.replace(size=best), (3000, 4000), 3 * GB)          # that size is accepted
    assert plan.peak <= memory.PLAN_FRACTION * 3 * GB and plan.tiles[-1] is not None


def test_nothing_fits_and_unknown_budget():
    with pytest.raises(DeviceError, match=r"budget is 0\.0 GB; not even size 16 fits: free memory or raise "
                                          r"--memory-limit$"):
        plan_job(params(size=64), (1, 1), 10 * 2**20)
    plan = plan_job(params(size=16000), (1, 1), None)                 # cannot tell: no refusal, no tiles
    assert set(plan.tiles) == {None} and plan.history == 100 and plan.notes == ()


def test_the_planner_runs_whole_when_it_can_then_the_cheapest_of_tiles_histories_and_adam():
    from pipeline.run.plan_cost import plan_cost

    p = params(size=1536, multiscale=3)
    whole = plan_job(p, (1152, 1536), 100 * GB)
    assert whole.tiles == (None, None, None) and whole.history == 100 and whole.notes == ()
    mid = params(size=768, multiscale=1)      # just short of room for history 100: 50, still whole
    short = plan_job(mid, (576, 768), estimate_bytes(mid, (576, 768)) - 1)
    assert short.tiles == (None,) and short.history == 50
    assert short.notes == ("L-BFGS history 50 instead of 100 to fit",)
    two = plan_job(p, (1152, 1536), 2 * GB)
    assert two.tiles[:2] == (None, None) and two.tiles[2] % 16 == 0 and two.tiles[2] >= memory.GOOD_TILE
    assert two.optimizer == "lbfgs" and two.peak <= 2 * GB * memory.PLAN_FRACTION
    assert two.notes[1] == f"L-BFGS history {two.history} instead of 100 to fit"
    # Cheaper than history 20 in the largest 20-step tiles that fit, which the old order took.
    cost = lambda tiles, h: plan_cost(p, (1152, 1536), tiles, "lbfgs", h)  # noqa: E731
    twenty = memory._cheapest_tile(p, (1152, 1536), int(2 * GB * memory.PLAN_FRACTION), 20, "lbfgs", False)
    assert cost(two.tiles, two.history) <= cost((None, None, twenty[0]), 20)
    adam = plan_job(p, (1152, 1536), 600 * 10**6)
    assert adam.optimizer == "adam" and adam.history == 0 and adam.tiles[2] is not None
    assert adam.describe()["mode"] == f"tiles of {adam.tiles[2]} px"
    assert adam.notes[1] == "Adam instead of L-BFGS: even a 5-step history does not fit"


def test_workers_share_the_free_memory(monkeypatch, tmp_path):
    """Two CPU workers each plan with half of the free memory, not each with all of it."""
    from pipeline.executors.base import ExecutorOptions, Slot, device_sharing

    slots = [Slot(0, "cpu"), Slot(1, "cpu"), Slot(2, "cuda:0")]
    assert [device_sharing(slots, s) for s in slots] == [2, 2, 1]
    options = ExecutorOptions(memory_limit=None).worker_options(device_sharing(slots, slots[0]))
    assert options["sharing"] == 2 and options["memory_limit"] is None
    monkeypatch.setattr(memory, "free_bytes", lambda device: 8 * GB)
    assert memory.job_budget(None, "cpu", 2) == (4 * GB, 0)
    assert memory.default_budget("cpu", sharing=4) == 2 * GB
    assert memory.default_budget("cpu") == 8 * GB
    assert memory.default_budget("cuda:0", sharing=2) == (8 * GB - memory.CUDA_MARGIN) // 2


def test_memory_sizes_parse_or_say_what_is_expected():
    assert memory.parse_size("2GB") == 2 * GB and memory.parse_size("1.5 GiB") == int(1.5 * 2**30)
    assert memory.parse_size("800mb") == 800 * 10**6 and memory.parse_size(3 * GB) == 3 * GB
    with pytest.raises(ValueError, match="expected a size like 2GB"):
        memory.parse_size("two gigs")
    with pytest.raises(ValueError, match="below 64MB"):
        memory.parse_size("1MB")


def test_free_memory_on_cpu_and_cuda(monkeypatch):
    cpu = free_bytes("cpu")
    assert cpu is not None and 0 < cpu
    meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024
               for line in open("/proc/meminfo") if line.startswith("MemAvailable")}
    assert cpu <= meminfo["MemAvailable"] * 1.2
    # CUDA: what the driver has free plus what PyTorch's caching allocator holds unused.
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (5 * GB, 80 * GB))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device=None: 3 * GB)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device=None: 1 * GB)
    assert free_bytes("cuda:0") == 7 * GB


def test_stylize_at_16000_px_says_what_fits_instead_of_running_out_of_memory(tmp_path, content_path, style_path,
                                                                               capsys):
    with pytest.raises(SystemExit) as stop:
        main(["stylize", str(content_path), str(style_path), "-o", str(tmp_path / "o.png"), "--size", "16000",
              "--memory-limit", "3GB", "--device", "cpu", "--quiet"])
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: size 16000 needs at least [\d.,]+ GB even in tiles with Adam, the memory budget is "
                        r"[\d.]+ GB \(the limit less [\d.]+ GB this worker holds: torch and the network\); the largest that fits is about \d+ px; lower size or raise --memory-limit\n",
                        err), err
    assert not (tmp_path / "o.png").exists()


def test_an_untiled_clip_size_that_does_not_fit_names_the_budget_it_needs():
    p = params(size=2048)
    with pytest.raises(DeviceError) as err:
        memory.check_fits(p, (3000, 4000), "cpu", limit=2 * GB)
    need = estimate_bytes(p, (3000, 4000)) / memory.PLAN_FRACTION    # stated as a budget, like refusals
    assert str(err.value).startswith(f"size 2048 needs about {memory._gb(need)} GB and clips run untiled; "
                                     "the memory budget is ")

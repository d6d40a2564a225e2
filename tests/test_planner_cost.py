"""The memory planner runs the cheapest plan that fits: more memory never makes a job slower.

The cost of a plan (run/plan_cost.py) is the network pixels of all its evaluations times how
many evaluations its optimizer state needs; these tests sweep budgets over several shapes and
parameters and check that the cost never grows with the budget, and that the planner's choice
costs no more than any plan that fits (found by trying every tile at every stage).
"""
from __future__ import annotations

import itertools
import math

import pytest

from pipeline.errors import DeviceError
from pipeline.params import Params
from pipeline.run import memory
from pipeline.run.plan_cost import OPTIMIZER_FACTOR, TILED_WORK, plan_cost, stage_work

MB = 10**6
CASES = [
    (Params(size=1536), (1152, 1536), False),
    (Params(size=768, multiscale=1), (576, 768), False),
    (Params(size=4032), (3024, 4032), False),
    (Params(size=1024, optimizer="adam"), (1024, 768), False),
    (Params(size=2048, style_layers=("conv1_1", "conv2_1", "conv3_1"), content_layers=("conv3_2",)), (1000, 3000), False),
    (Params(size=1536), (1152, 1536), True),
]
BUDGETS = [int(100 * MB * 1.055 ** k) for k in range(120)]    # 100 MB … 61 GB, 5.5 % apart


def _cost(params, shape, budget, bf16):
    try:
        plan = memory.plan_job(params, shape, budget, bf16)
    except DeviceError:
        return math.inf, None
    return plan_cost(params, shape, plan.tiles, plan.optimizer, plan.history), plan


@pytest.mark.parametrize("params,shape,bf16", CASES)
def test_more_memory_never_makes_a_plan_cost_more(params, shape, bf16):
    costs = [_cost(params, shape, b, bf16) for b in BUDGETS]
    for (low, low_plan), (high, high_plan), budget in zip(costs, costs[1:], BUDGETS[1:]):
        assert high <= low * (1 + 1e-12), (budget, low_plan, high_plan)
    finite = [c for c, _ in costs if c < math.inf]
    assert len(finite) > 10 and finite[0] > finite[-1]       # the sweep crosses tiles, histories, whole
    assert costs[-1][1].tiles[-1] is None                     # at 61 GB every case runs whole


def test_the_pair_of_budgets_that_was_not_monotone():
    """512 × 512 px: 375 MB planned 48 px tiles with history 10, 400 MB 32 px tiles (each crop
    36 times its core's pixels) with history 20: more memory, more work. Now 400 MB costs no more."""
    p, shape = Params(size=512), (512, 512)
    (small, small_plan), (large, large_plan) = _cost(p, shape, 375 * MB, False), _cost(p, shape, 400 * MB, False)
    assert large <= small
    assert small_plan.tiles[-1] > memory.MIN_TILE and large_plan.tiles[-1] > memory.MIN_TILE, (small_plan, large_plan)


def _brute_force(params, shape, budget, bf16):
    """The least cost over every optimizer state and every tile (or whole) at every stage."""
    room = int(budget * memory.PLAN_FRACTION)
    best = math.inf
    for optimizer, history in memory._candidates(params):
        per_stage = []
        for side in params.stage_sizes(shape):
            stage = params.replace(size=side)
            fits = [t for t in [None, *memory._tile_sizes(stage, shape)]
                    if memory.estimate_bytes(stage, shape, 1, bf16, history, t, optimizer) <= room]
            per_stage.append(fits)
        if any(not f for f in per_stage):
            continue
        for tiles in itertools.product(*per_stage):
            best = min(best, plan_cost(params, shape, tiles, optimizer, history))
    return best


@pytest.mark.parametrize("budget_mb", [150, 260, 330, 420, 700, 1300, 2600])
def test_the_planners_choice_costs_no_more_than_any_plan_that_fits(budget_mb):
    params, shape = Params(size=640, multiscale=2), (480, 640)
    chosen = _cost(params, shape, budget_mb * MB, False)[0]
    assert chosen == pytest.approx(_brute_force(params, shape, budget_mb * MB, False), rel=1e-12)


def test_the_cost_counts_pixels_tiles_and_the_optimizer():
    p, shape = Params(size=512, multiscale=1), (384, 512)
    assert stage_work(p, shape, None) == 384 * 512
    # 256 px tiles of a 512 × 384 image with an 80 px halo: rows 0–336 and 176–384, columns
    # 0–336 and 176–512, i.e. (336 + 208) × (336 + 336) pixels, as engine/tile_grid.split cuts them.
    assert stage_work(p, shape, 256) == pytest.approx(TILED_WORK * (336 + 208) * (336 + 336))
    assert plan_cost(p, shape, (None,), "lbfgs", 100) == 400 * 384 * 512
    assert plan_cost(p, shape, (None,), "adam", 0) == OPTIMIZER_FACTOR[("adam", 0)] * 400 * 384 * 512
    factors = [OPTIMIZER_FACTOR[("lbfgs", h)] for h in memory.HISTORIES]
    assert factors == sorted(factors) and factors[0] == 1.0 < OPTIMIZER_FACTOR[("adam", 0)]


def test_a_whole_image_with_a_shorter_history_beats_tiles_and_the_notes_say_so():
    p = Params(size=768, multiscale=1)
    shape = (576, 768)
    plan = memory.plan_job(p, shape, memory.estimate_bytes(p, shape) - 1)   # just short of history 100
    assert plan.tiles == (None,) and plan.history == 50
    assert plan.notes == ("L-BFGS history 50 instead of 100 to fit",)

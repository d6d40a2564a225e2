"""What a memory plan costs, so that the planner can run the cheapest plan that fits.

The cost of a plan is the network pixels of all its evaluations (each stage's evaluations ×
the pixels one evaluation passes through the network: the image's when it runs whole,
TILED_WORK × its tiles' crops when tiled) times OPTIMIZER_FACTOR: how many evaluations that
optimizer state needs to reach the loss L-BFGS with a 100-pair history reaches. The planner
(run/memory.py) takes the plan of least cost among those that fit its budget; a larger
budget only adds plans to choose from, so more memory never makes a job slower by this
measure. The figures are measured: docs/performance.md, "What a plan costs". Torch-free.
"""
from __future__ import annotations

from functools import lru_cache
from typing import Sequence

from ..engine import tile_grid
from ..engine.layers import scaled_size
from ..params import Params

# CPU time per evaluation in tiles ÷ the crops' pixels per pass, relative to the whole image:
# 1.22 (256 px tiles) and 1.21 (128 px tiles) at 512 × 384 px (docs/performance.md).
TILED_WORK = 1.2
# Evaluations to reach the loss of L-BFGS (history 100) at 100 evaluations, relative to its 100.
OPTIMIZER_FACTOR = {("lbfgs", 100): 1.0, ("lbfgs", 50): 1.05, ("lbfgs", 20): 1.15, ("lbfgs", 10): 1.3,
                    ("lbfgs", 5): 1.5, ("adam", 0): 4.0}


def stage_work(params: Params, shape: tuple[int, int], tile: int | None) -> float:
    """Network pixels of one evaluation at `params.size`: the image's whole, or TILED_WORK ×
    every tile's crop (core plus halo, inside the image)."""
    return _stage_work(params.size, shape, tile, (*params.content_layers, *params.style_layers))


def _stage_work(side: int, shape: tuple[int, int], tile: int | None, layers: tuple[str, ...]) -> float:
    h, w = scaled_size(*shape, side)
    if tile is None:
        return float(h * w)
    return TILED_WORK * _axis_crops(h, tile, layers) * _axis_crops(w, tile, layers)


@lru_cache(maxsize=65536)
def _axis_crops(length: int, tile: int, layers: tuple[str, ...]) -> int:
    """The crops' extents along one axis, summed: tiles are a product of two such splits
    (engine/tile_grid.split), so their crops' pixels are the product of two such sums."""
    step, margin = tile_grid.grid(layers), tile_grid.halo(layers)
    tile = max(step, tile // step * step)
    return sum(min(length, y + tile + margin) - max(0, y - margin) for y in range(0, length, tile))


def plan_cost(params: Params, shape: tuple[int, int], tiles: Sequence[int | None], optimizer: str,
              history: int) -> float:
    """Σ over stages of its evaluations × stage_work, × OPTIMIZER_FACTOR[(optimizer, history)]."""
    work = sum(steps * _stage_work(side, shape, tile, (*params.content_layers, *params.style_layers))
               for side, steps, tile in zip(params.stage_sizes(shape), params.stage_steps(), tiles))
    return work * OPTIMIZER_FACTOR[(optimizer, history)]

"""Will a job fit, and how? Peak-memory estimates, what a device has free, and the planner.

Before a job starts, `plan_job` picks how it runs within a budget (`--memory-limit`, the
manifest's `memory_limit`, or the device's free memory shared among the workers on it): the
whole image when it fits, else the exact tiled objective (engine/tiled.py) with the largest
tile that fits, a shorter L-BFGS history, or Adam; what fits in no way is refused in one line.

`estimate_bytes` counts what the optimization keeps alive at once at a stage:

- the VGG activations autograd saves for the backward pass, up to the deepest layer used:
  about 670 floats per pixel up to conv5_1 (each conv and ReLU output, each pooling output and
  its argmax indices; pooling shrinks what follows by 4), over the whole image or one tile's
  crop (core plus halo); two bytes each under bf16 autocast, four otherwise;
- image-sized float32 vectors: the image, its gradient, the optimizer's previous gradient and
  step; L-BFGS's 2 × history curvature vectors (allocated up front), or Adam's two moments;
  the moving average of the iterates when `average` > 0 (both optimizers step in place with
  one temporary; the stage loop frees its start copies and, before the final pass and the
  save, the optimizer state); under tiling more (below);
- the content targets, the Gram targets, and a fixed slack for the allocator;
- or, when larger, the style image's forward pass (no autograd), whole or in tiles.

Calibration against the peak RSS: docs/performance.md. The network's weights are not counted
(a worker has loaded them before it asks); the planner fills at most PLAN_FRACTION of the budget.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import DeviceError
from ..engine import tile_grid
from ..engine.layers import LAYER_INDEX, LAYER_NAMES, scaled_size
from .cache import style_side
from .cpu_memory import cpu_free as _cpu_free
from .plan_cost import plan_cost, stage_work
from ..params import LBFGS_HISTORY, Params

if TYPE_CHECKING:
    import torch

FLOAT = 4                        # bytes of a float32; activations under bf16 autocast take half
SLACK = 64 * 2**20               # allocator fragmentation, workspaces, small tensors
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
GB = 1e9
# Under tiling more image-sized vectors stay alive beside the optimizer's (the stage's resized
# content and its batch copy, the start image, the gradient accumulator, crop copies), and the
# per-tile allocations fragment the heap: measured at 1536 px (docs/performance.md), the
# network's share needs this factor and the vectors this count to stay above the real peak.
_TILED_VECTORS = 6
_TILED_NETWORK = 1.25
CPU_WORKER_BASE = 900 * 2**20    # RSS of a CPU worker with torch and VGG-19 loaded, measured
CUDA_WORKER_BASE = 256 * 2**20   # a CUDA worker's allocations before a job: VGG-19's weights, cuDNN


def _channels(name: str) -> int:
    return _BLOCK_CHANNELS[int(name[4]) - 1]      # conv3_1, relu3_1, pool3: block 3


@lru_cache(maxsize=64)
def _halo(layers: tuple[str, ...]) -> int:
    return tile_grid.halo(layers)    # cached: the planner asks for it thousands of times per job


@lru_cache(maxsize=64)
def activation_floats(deepest: str) -> float:
    """Floats per output pixel that one forward pass to `deepest` leaves for backward."""
    total, scale = 0.0, 1.0
    for name in LAYER_NAMES[: LAYER_INDEX[deepest] + 1]:
        if name.startswith("pool"):
            scale /= 4.0       # 2 × 2 pooling: a quarter of the pixels from here on
            total += 3 * _channels(name) * scale   # its output, and the int64 argmax indices
        else:
            total += _channels(name) * scale
    return total


def estimate_bytes(params: Params, shape: tuple[int, int] = (1, 1), batch: int = 1,
                   bf16: bool = False, history: int = LBFGS_HISTORY, tile: int | None = None,
                   optimizer: str | None = None) -> int:
    """Peak bytes to stylize `batch` images of a content image's `shape` (h, w) with `params`.

    Only the aspect ratio of `shape` matters: the output's long side is `params.size`. With
    `bf16` (autocast on CUDA) the network's activations take two bytes each; the image, its
    gradient and the optimizer's state stay float32. `tile`: the network sees one tile (core
    plus halo) at a time instead of the whole image; `history`, `optimizer`: the planner's
    choice when it differs from the parameters'.
    """
    h, w = scaled_size(*shape, params.size)
    pixels = h * w
    layers = [*params.content_layers, *params.style_layers]
    deepest = max(layers, key=LAYER_INDEX.__getitem__)
    # sliced: the sorts' saved and temporary tensors, ~1600 floats per pixel (counted, not yet measured)
    network = activation_floats(deepest) * (0.5 if bf16 else 1.0) + 4 * 3 + 1600 * (params.style_loss in UNTILEABLE)
    seen = pixels if tile is None else _crop_pixels(h, w, tile, layers)
    per_pixel = 4 * 3 + _TILED_VECTORS * 3 * (tile is not None)
    if (optimizer or params.optimizer) == "lbfgs":
        per_pixel += 2 * 3 * history + 4 * 3
    else:
        per_pixel += 3 * 3
    per_pixel += 3 * (params.average > 0)   # the iterate average (engine/optimizers.py)
    per_pixel += _targets_floats(tuple(params.content_layers))
    grams = sum(3 * _channels(n) ** 2 for n in params.style_layers)
    if tile is not None:
        network *= _TILED_NETWORK
    optimize = batch * (pixels * per_pixel + seen * network + grams) * FLOAT
    # The style image's forward pass (no autograd) happens before, not during, the optimization.
    return int(max(optimize, style_bytes(params, tile)) + SLACK)


def style_bytes(params: Params, tile: int | None = None) -> int:
    """Peak of the style image's forward pass (no autograd: about three conv1 activations live)."""
    side = style_side(params, params.size)
    seen = side ** 2 if tile is None else min(side, tile + 2 * _halo(tuple(params.style_layers))) ** 2
    return int(3 * 64 * seen * FLOAT + 3 * side ** 2 * FLOAT)


def _crop_pixels(h: int, w: int, tile: int, layers: list[str]) -> int:
    """The largest crop (core plus halo on both sides) a tile of `tile` px reads."""
    reach = tile + 2 * _halo(tuple(layers))
    return min(h, reach) * min(w, reach)


@lru_cache(maxsize=64)
def _targets_floats(content_layers: tuple[str, ...]) -> float:
    """Floats per output pixel of the content targets."""
    return sum(_channels(n) / 4.0 ** _pools_before(n) for n in content_layers)


def _pools_before(name: str) -> int:
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name]] if n.startswith("pool"))


def free_bytes(device: torch.device | str) -> int | None:
    """Memory this process could still allocate on `device`, or None when it cannot tell."""
    if str(device) == "cpu":          # without torch: `plan` shows memory plans without loading it
        return _cpu_free()
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks PyTorch's caching allocator holds but no tensor uses are free to this process.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    return _cpu_free() if device.type == "cpu" else None


def _gb(n: float) -> str:
    value = n / GB
    return f"{value:.1f}" if value < 100 else f"{math.floor(value):,}"


# ----------------------------------------------------------------------------- the planner

HISTORIES = (LBFGS_HISTORY, 50, 20, 10, 5)   # L-BFGS histories the planner tries, longest first
GOOD_TILE = 256          # the style image's tile when the job itself runs whole
# The planner fills at most this share of the budget. The rest is for the C allocator: glibc
# keeps freed blocks of the tiles' varying sizes in its heap, so the resident set runs a few
# per cent above the bytes alive (measured at 12 MP: docs/performance.md).
PLAN_FRACTION = 0.95
MIN_TILE = 32
UNTILEABLE = ("sliced",)     # style losses engine/tiled.py cannot tile (their `tileable` is False)
CUDA_MARGIN = 512 * 2**20    # the CUDA context, cuDNN workspaces and fragmentation we do not model
_UNITS = {"": 1, "b": 1, "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
          "t": 10**12, "tb": 10**12, "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_size(text: str | int) -> int:
    """'2GB', '1.5 GiB', '800MB' or a byte count -> bytes; ValueError with the accepted forms
    and the range (64MB to 1024TiB: beyond it a typo, or meant as no limit: leave it out)."""
    from fractions import Fraction

    shown = repr(text) if len(str(text)) <= 40 else f"{str(text)[:20]!r}… ({len(str(text))} characters)"
    if isinstance(text, int) and not isinstance(text, bool):
        number, unit = str(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if not match or match.group(2).lower() not in _UNITS:
            raise ValueError(f"expected a size like 2GB, 1.5GiB or 800MB, got {shown}")
        number, unit = match.group(1).lstrip("0") or "0", match.group(2).lower()
    # Exact: a float of 400 digits is inf, and int(inf) raises. Past 20 integer digits it is
    # beyond any limit; 40 characters keep every digit that matters (no int() of thousands).
    whole = len(number.split(".")[0].lstrip("-"))
    size = 2**64 if whole > 20 else int(Fraction(number[:40]) * _UNITS[unit])
    if size < 64 * 2**20:
        raise ValueError(f"a memory limit below 64MB cannot hold the network's weights, got {shown}")
    if size > 2**50:
        raise ValueError(f"a memory limit must be between 64MB and 1024TiB, got {shown}")
    return size


def process_rss() -> int:
    """This process's resident set now (bytes; 0 when it cannot tell): torch, the network's
    weights and Python, about 0.9 GB on CPU once VGG-19 is loaded."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return 0


def worker_base(device: str) -> int:
    """What a worker holds before any job, counted against a memory limit: on CPU the process
    (torch, Python, the network's weights), on CUDA the network's weights and workspaces."""
    return CPU_WORKER_BASE if str(device) == "cpu" else CUDA_WORKER_BASE


def job_budget(limit: int | None, device: str, sharing: int = 1, held: int = 0) -> tuple[int | None, int]:
    """What a worker's jobs may plan for, the same for every job of the worker (and for `plan`).
    With a `limit` (--memory-limit, manifest memory_limit; per worker) the whole worker must
    stay within it: the limit less worker_base, or less `held` (what the worker measured it
    holds) when that is more. Without one: the device's free memory shared among the
    `sharing` workers on it. Returns (budget, bytes held counted against it)."""
    if limit is None:
        return default_budget(device, sharing), 0
    base = max(worker_base(device), held)
    return max(0, limit - base), base


def default_budget(device: torch.device | str, sharing: int = 1) -> int | None:
    """What one worker may plan for: the device's free memory (CUDA: less a margin), split
    evenly among the `sharing` workers on that device (on CPU: all CPU workers of the machine),
    so N workers do not each count the same free memory and over-commit together."""
    free = free_bytes(device)
    if free is None:
        return None
    if str(device).startswith("cuda"):
        free -= CUDA_MARGIN
    return max(0, free) // max(1, sharing)


@dataclass(frozen=True)
class MemoryPlan:
    """How a job runs within its memory budget (recorded in its sidecar, shown by `plan`)."""
    tiles: tuple[int | None, ...]     # per stage: tile core size (px), None for the whole image
    style_tile: int | None            # the style image's forward pass in tiles, or whole
    optimizer: str
    history: int                      # L-BFGS curvature pairs (0 for Adam)
    peak: int                         # estimated bytes
    budget: int | None                # what it had to fit in; None: unknown, nothing checked
    notes: tuple[str, ...] = ()       # what the planner changed, in words
    batch: int = 1                    # jobs that run together under this plan; `peak` is theirs together

    def describe(self) -> dict[str, Any]:
        final = self.tiles[-1] if self.tiles else None
        return {"mode": "whole" if final is None else f"tiles of {final} px", "tiles": list(self.tiles),
                "style_tile": self.style_tile, "optimizer": self.optimizer, "lbfgs_history": self.history,
                "estimated_peak_bytes": self.peak, "budget_bytes": self.budget, "batch": self.batch,
                "notes": list(self.notes)}


def _cheapest_tile(params: Params, shape: tuple[int, int], room: int, history: int, optimizer: str,
                   bf16: bool) -> tuple[int | None, int] | None:
    """(tile or None for whole, peak) of the least stage_work that fits in `room`, or None.

    The whole image is the cheapest when it fits. Otherwise the peak grows with the tile, so
    the tiles that fit are those up to the largest (found by bisection), and the cheapest of
    them is taken (a smaller tile can cost less where it splits the image more evenly)."""
    whole = estimate_bytes(params, shape, 1, bf16, history, None, optimizer)
    if whole <= room:
        return None, whole
    if params.style_loss in UNTILEABLE:     # a global sort: never tiled (engine/tiled.py refuses)
        return None
    sizes = _tile_sizes(params, shape)
    peak = lambda t: estimate_bytes(params, shape, 1, bf16, history, t, optimizer)  # noqa: E731
    low, high = 0, len(sizes)         # sizes[:low] fit, sizes[high:] do not
    while low < high:
        mid = (low + high) // 2
        low, high = (mid + 1, high) if peak(sizes[mid]) <= room else (low, mid)
    if low == 0:
        return None
    tile = _cheapest_up_to(params, shape)[low - 1]
    return tile, peak(tile)


def _tile_sizes(params: Params, shape: tuple[int, int]) -> list[int]:
    """Tile cores the planner considers, ascending: MIN_TILE up to the long side, on the grid."""
    step = tile_grid.grid([*params.content_layers, *params.style_layers])
    long_side = max(scaled_size(*shape, params.size))
    return list(range(-(-MIN_TILE // step) * step, long_side // step * step + 1, step))


@lru_cache(maxsize=1024)
def _cheapest_up_to(params: Params, shape: tuple[int, int]) -> list[int]:
    """For each i, the tile of least stage_work among _tile_sizes(...)[: i + 1] (the larger at a tie)."""
    out: list[int] = []
    for tile in _tile_sizes(params, shape):
        if not out or stage_work(params, shape, tile) <= stage_work(params, shape, out[-1]):
            out.append(tile)
        else:
            out.append(out[-1])
    return out


def _candidates(params: Params) -> list[tuple[str, int]]:
    """(optimizer, history) the planner may run a job with, in order of preference at equal cost."""
    adam = [("adam", 0)]
    return [("lbfgs", h) for h in HISTORIES] + adam if params.optimizer == "lbfgs" else adam


@lru_cache(maxsize=4096)       # `plan` asks for many jobs alike; a MemoryPlan is immutable
def plan_job(params: Params, shape: tuple[int, int], budget: int | None, bf16: bool = False,
             held: int = 0) -> MemoryPlan:
    """The cheapest way (`plan_cost`) to run the job within `budget` bytes.

    Every stage runs whole or in the tile that costs it least among those that fit, for every
    optimizer state the job may use: L-BFGS with its history of 100 or shortened to 50, 20, 10
    or 5, or Adam (two moments instead of 2 × history vectors); the plan of least cost wins
    (at equal cost the longer history). Since a larger budget only adds choices, the cost never
    grows with the budget. Raises DeviceError naming the largest size that fits when nothing
    does (`held`: what the worker process holds already, named in that message when a memory
    limit was reduced by it).
    """
    sides = params.stage_sizes(shape)
    full = estimate_bytes(params, shape, 1, bf16)
    lbfgs = params.optimizer == "lbfgs"
    if budget is None:
        return MemoryPlan(tuple(None for _ in sides), None, params.optimizer,
                          LBFGS_HISTORY if lbfgs else 0, full, None)
    room = int(budget * PLAN_FRACTION)
    if style_bytes(params) > room and params.style_loss in UNTILEABLE:
        raise DeviceError(f"style_loss {params.style_loss}: the style image's features at {style_side(params, params.size)} px "
                          f"need about {_gb(style_bytes(params) / PLAN_FRACTION)} GB and cannot be computed in tiles; "
                          "lower style_scale or size, raise --memory-limit, or use style_loss gram or meancov")
    best: tuple[float, MemoryPlan] | None = None
    lbfgs_fits = False
    staged = [params.replace(size=side) for side in sides]
    for optimizer, history in _candidates(params):
        stages = [_cheapest_tile(stage, shape, room, history, optimizer, bf16) for stage in staged]
        if None in stages:
            continue
        lbfgs_fits |= optimizer == "lbfgs"
        tiles = tuple(t for t, _ in stages)
        cost = plan_cost(params, shape, tiles, optimizer, history)
        if best is None or cost < best[0]:
            best = cost, MemoryPlan(tiles, None, optimizer, history, max(p for _, p in stages), budget)
    if best is None:
        raise DeviceError(untiled_refusal(params, shape, budget, bf16) if params.style_loss in UNTILEABLE
                          else _refusal(params, shape, budget, bf16, held))
    plan = best[1]
    tile, optimizer, history = plan.tiles[-1], plan.optimizer, plan.history
    style_tile = None
    if style_bytes(params) > room:
        style_tile = tile or GOOD_TILE
        while style_tile > MIN_TILE and style_bytes(params, style_tile) > room:
            style_tile -= tile_grid.grid(params.style_layers)
    notes = []
    tiled = [t for t in plan.tiles if t is not None]
    if tiled:
        notes.append(f"tiles of {tiled[-1]} px (+{tile_grid.halo([*params.content_layers, *params.style_layers])} px halo): "
                     f"the whole image needs about {_gb(full)} GB")
    if optimizer != params.optimizer:
        notes.append("Adam instead of L-BFGS: " + ("cheaper than the L-BFGS plans that fit (smaller tiles)" if lbfgs_fits
                                                   else f"even a {HISTORIES[-1]}-step history does not fit"))
    elif lbfgs and history != LBFGS_HISTORY:
        notes.append(f"L-BFGS history {history} instead of {LBFGS_HISTORY} to fit")
    return MemoryPlan(plan.tiles, style_tile, optimizer, history, plan.peak, budget, tuple(notes))


def _refusal(params: Params, shape: tuple[int, int], limit: int, bf16: bool, held: int = 0) -> str:
    smallest = int(estimate_bytes(params, shape, 1, bf16, 0, MIN_TILE, "adam") / PLAN_FRACTION)
    have = f"the memory budget is {_gb(limit)} GB"
    budget = int(limit * PLAN_FRACTION)
    if held:
        have += f" (the limit less {_gb(held)} GB this worker holds: torch and the network)"
    low, high = 16, params.size
    if estimate_bytes(params.replace(size=16), shape, 1, bf16, 0, MIN_TILE, "adam") > budget:
        return (f"size {params.size} needs at least {_gb(smallest)} GB even in tiles with Adam, {have}; "
                f"not even size 16 fits: free memory or raise --memory-limit")
    while low < high:
        mid = (low + high + 1) // 2
        if estimate_bytes(params.replace(size=mid), shape, 1, bf16, 0, MIN_TILE, "adam") <= budget:
            low = mid
        else:
            high = mid - 1
    return (f"size {params.size} needs at least {_gb(smallest)} GB even in tiles with Adam, {have}; "
            f"the largest that fits is about {max(16, low // 16 * 16)} px; "
            "lower size or raise --memory-limit")


def untiled_refusal(params: Params, shape: tuple[int, int], limit: int, bf16: bool) -> str:  # a loss never tiled
    fits = lambda side: estimate_bytes(params.replace(size=side), shape, 1, bf16, 0, None, "adam") <= limit * PLAN_FRACTION  # noqa: E731
    low = 16
    while low * 2 <= params.size and fits(low * 2): low *= 2  # noqa: E701
    return (f"size {params.size} with style_loss {params.style_loss} needs about {_gb(estimate_bytes(params, shape, 1, bf16) / PLAN_FRACTION)} GB "
            f"whole and cannot run in tiles (it sorts all positions at once); the memory budget is {_gb(limit)} GB, "
            f"about {low} px fits; lower size, raise --memory-limit, or use style_loss gram or meancov")


def check_fits(params: Params, shape: tuple[int, int], device: torch.device | str, bf16: bool = False,
               limit: int | None = None, sharing: int = 1) -> None:
    """For what runs whole images only (clips' frames): refuse a size the budget cannot hold."""
    budget, _ = job_budget(limit, str(device), sharing)
    need = estimate_bytes(params, shape, 1, bf16)
    if budget is not None and need > budget * PLAN_FRACTION:
        raise DeviceError(f"size {params.size} needs about {_gb(need / PLAN_FRACTION)} GB and clips run untiled; the memory "
                          f"budget is {_gb(budget)} GB; lower size or raise --memory-limit")

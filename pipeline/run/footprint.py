"""How many jobs of one shape fit in one GPU batch: a measured one-image footprint.

The worker (and benchmarks/throughput.py) measure the peak memory of one image's forward and
backward at the final size once per shape and settings, add the optimizer's state, and fit
as many as 85 % of the free memory holds. On CPU batching gains nothing: one job per batch.
"""
from __future__ import annotations

import torch

from ..engine.features import VGGFeatures
from ..engine.optimize import Precision
from ..params import LBFGS_HISTORY, Params
from . import memory

MAX_BATCH = 32
FILL = 0.85        # of the free memory: the rest for the allocator's fragmentation


def measure_footprint(feats: VGGFeatures, params: Params, h: int, w: int, device: torch.device,
                      precision: Precision) -> int:
    """Peak bytes of one (h, w) image's forward and backward, plus its optimizer state.

    May raise torch.cuda.OutOfMemoryError: the caller frees memory and runs one job at a time.
    """
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    x = torch.rand(1, 3, h, w, device=device, requires_grad=True)
    layout = torch.channels_last if precision.channels_last else torch.contiguous_format
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision.bf16):
        acts = feats(x.contiguous(memory_format=layout), [*params.content_layers, *params.style_layers])
        sum(a.float().pow(2).mean() for a in acts.values()).backward()
    peak = torch.cuda.max_memory_allocated(device) - base
    del x, acts
    # L-BFGS allocates its whole history up front (optimizers.py); Adam keeps two moments.
    state = 2 * LBFGS_HISTORY * 3 * h * w * 4 if params.optimizer == "lbfgs" else 2 * 3 * h * w * 4
    return int(peak + state + 4 * 3 * h * w * 4)


def fitting(footprint: int, device: torch.device, limit: int = MAX_BATCH, budget: int | None = None) -> int:
    """Jobs of `footprint` bytes each that fit (at least 1, at most `limit`) in `budget` (a
    worker's share, run/budget.py), or when it is None in what `device` has free now."""
    free = (memory.free_bytes(device) if budget is None else budget) or 0
    return max(1, min(limit, int(FILL * free // max(1, footprint))))


def free_device_memory(device: torch.device) -> None:
    """Give back what the last (failed) batch held: collect its cycles, empty CUDA's cache.

    Call it outside any `except` block: a live traceback keeps the failed batch's tensors."""
    import gc

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()

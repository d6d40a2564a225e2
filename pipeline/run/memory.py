"""Will a job fit? An estimate of one stylization's peak memory, and what a device has free.

A job too large for its device should fail before it starts, with the size that would fit,
not minutes later with an out-of-memory trace (or, on CPU, with the machine swapping and the
OOM killer taking the worker). The estimate counts what the optimization keeps alive at once
at the final (largest) stage:

- the VGG activations autograd saves for the backward pass, up to the deepest layer used:
  about 670 floats per output pixel up to conv5_1 (each conv and ReLU output, each pooling
  output and its argmax indices; pooling shrinks what follows by 4);
- the image, its gradient and the normalized copy VGG reads;
- the optimizer: L-BFGS allocates its whole history up front, `LBFGS_HISTORY` curvature
  pairs of two image-sized vectors (params.py), Adam two moments;
- Gram targets and the content targets (small), and a fixed slack for the allocator.

Measured on CPU (peak RSS above the loaded network, 256 and 512 px, Adam and L-BFGS, float32)
the estimate is 5–40% above the real peak, never below; the excess is mostly the fixed slack,
so it shrinks as sizes grow. The network's weights are not counted: a worker has loaded them
before it asks. `estimate_bytes` takes `batch` for the check of several images at once; the
GPU batch size itself comes from a measured footprint (worker.JobRunner._capacity), not from
this estimate.
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import DeviceError
from ..engine.layers import LAYER_INDEX, LAYER_NAMES, scaled_size
from .cache import style_side
from ..params import LBFGS_HISTORY, Params

if TYPE_CHECKING:
    import torch

FLOAT = 4                        # bytes of a float32; activations under bf16 autocast take half
SLACK = 64 * 2**20               # allocator fragmentation, workspaces, small tensors
_BLOCK_CHANNELS = (64, 128, 256, 512, 512)
GB = 1e9


def _channels(name: str) -> int:
    return _BLOCK_CHANNELS[int(name[4]) - 1]      # conv3_1, relu3_1, pool3: block 3


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
                   bf16: bool = False) -> int:
    """Peak bytes to stylize `batch` images of a content image's `shape` (h, w) with `params`.

    Only the aspect ratio of `shape` matters: the output's long side is `params.size`. With
    `bf16` (autocast on CUDA) the network's activations take two bytes each; the image, its
    gradient and the optimizer's state stay float32.
    """
    h, w = scaled_size(*shape, params.size)
    pixels = h * w
    layers = [*params.content_layers, *params.style_layers]
    deepest = max(layers, key=LAYER_INDEX.__getitem__)
    per_pixel = activation_floats(deepest) * (0.5 if bf16 else 1.0) + 4 * 3
    if params.optimizer == "lbfgs":
        per_pixel += 2 * 3 * LBFGS_HISTORY + 4 * 3
    else:
        per_pixel += 3 * 3
    per_pixel += sum(_channels(n) / 4.0 ** _pools_before(n) for n in params.content_layers)
    grams = sum(3 * _channels(n) ** 2 for n in params.style_layers)
    optimize = batch * (pixels * per_pixel + grams) * FLOAT
    # The style image's forward pass (no autograd) happens before, not during, the optimization.
    side = style_side(params, params.size)
    style = 3 * 64 * side ** 2 * FLOAT
    return int(max(optimize, style) + SLACK)


def _pools_before(name: str) -> int:
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name]] if n.startswith("pool"))


def free_bytes(device: torch.device | str) -> int | None:
    """Memory this process could still allocate on `device`, or None when it cannot tell."""
    import torch   # here, not at the top: `plan` estimates memory without loading torch

    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        # Blocks PyTorch's caching allocator holds but no tensor uses are free to this process.
        return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    if device.type != "cpu":
        return None
    candidates = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
    return min(candidates) if candidates else None


def _meminfo_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> int | None:
    """A container's or Slurm job's memory limit minus its use (page cache it may drop counts free)."""
    for limit_file, usage_file, cache_key in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current", "inactive_file"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes",
             "total_inactive_file")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 2**60:
                return None
            usage = int(Path(usage_file).read_text())
            stat = Path(limit_file).with_name("memory.stat").read_text().split()
            cache = int(stat[stat.index(cache_key) + 1]) if cache_key in stat else 0
            return max(0, int(raw) - usage + cache)
        except (OSError, ValueError):
            continue
    return None


def largest_size(params: Params, shape: tuple[int, int], free: int, batch: int = 1,
                 bf16: bool = False) -> int | None:
    """The largest long side (a multiple of 16, at least 16) whose estimate fits in `free` bytes."""
    if estimate_bytes(params.replace(size=16), shape, batch, bf16) > free:
        return None
    low, high = 16, max(16, params.size)
    while low < high:            # the estimate grows with size: bisect for the last that fits
        mid = (low + high + 1) // 2
        if estimate_bytes(params.replace(size=mid), shape, batch, bf16) <= free:
            low = mid
        else:
            high = mid - 1
    return max(16, low // 16 * 16)


def check_fits(params: Params, shape: tuple[int, int], device: torch.device | str, batch: int = 1,
               bf16: bool = False) -> None:
    """Raise DeviceError naming the largest size that fits when the job cannot fit on `device`."""
    free = free_bytes(device)
    if free is None:
        return
    need = estimate_bytes(params, shape, batch, bf16)
    if need <= free:
        return
    best = largest_size(params, shape, free, batch, bf16)
    fits = (f"the largest that fits is about {best} px; lower size" if best is not None else
            "not even size 16 fits; free memory or use another device")
    if batch > 1:
        fits += " or the batch"
    raise DeviceError(f"size {params.size} needs about {_gb(need)} GB, this device ({device}) has "
                      f"{_gb(free)} GB free; {fits}")


def _gb(n: float) -> str:
    value = n / GB
    return f"{value:.1f}" if value < 100 else f"{math.floor(value):,}"

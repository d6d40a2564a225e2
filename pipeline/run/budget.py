"""A worker's memory budget: fixed once per worker, shared among the workers of a device.

`--memory-limit` (manifest `memory_limit`) is per worker. A worker fixes its budget once,
before its first job, and plans every job and every batch against it:

- with a limit: the limit less what the worker holds before any job (memory.worker_base: on
  CPU the process with torch and the network, 900 MiB; on CUDA the network, 256 MiB), or
  less what it measured holding then, when that is more. `plan` computes the same figure,
  so `plan` and `run` choose the same plan for the same job. On CUDA the process is also
  capped there (`torch.cuda.set_per_process_memory_fraction`);
- without one: the device's free memory at that moment (CUDA: less a margin), divided among
  the workers of that device (local: the slots on it; Ray: the actors a node or a GPU holds).

A batch is planned as a whole: `batch_capacity` is the most jobs whose footprint together
fits the budget, and each job of the batch records that batch's plan (`MemoryPlan.batch`).
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ..engine.layers import scaled_size
from ..errors import DeviceError
from ..params import Params
from . import memory

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class WorkerBudget:
    """What every job and batch of one worker plans for, fixed before its first job."""
    bytes: int | None        # None: free memory unknown and no limit: nothing is checked
    held: int                # what was counted against the limit (0 without one)


def worker_budget(limit: int | None, device: str, sharing: int = 1, held: int = 0) -> WorkerBudget:
    """The budget of a worker on `device` among `sharing` workers; `held`: what it measured."""
    budget, base = memory.job_budget(limit, device, sharing, held)
    return WorkerBudget(budget, base)


def measured_held(device: torch.device) -> int:
    """What this worker holds now, before any job: its resident set on CPU, what CUDA's caching
    allocator reserved on a GPU (the network's weights, cuDNN's workspaces)."""
    if device.type == "cuda":
        import torch

        return int(torch.cuda.memory_reserved(device))
    return memory.process_rss()


def cap_cuda_process(limit: int | None, device: torch.device) -> float | None:
    """With a limit on CUDA, make it the allocator's ceiling for this process: beyond it an
    allocation raises out of memory (which halves the batch) instead of taking another worker's
    share. Returns the fraction of the device set, or None when nothing was set."""
    if limit is None or device.type != "cuda":
        return None
    import torch

    total = torch.cuda.get_device_properties(device).total_memory
    fraction = min(1.0, limit / total)
    torch.cuda.set_per_process_memory_fraction(fraction, device)
    return fraction


def batch_capacity(params: Params, shape: tuple[int, int], budget: int | None, bf16: bool, cap: int) -> int:
    """The most jobs like this one (at most `cap`) that run together whole, with the job's own
    optimizer state, within `budget`: their estimate together is within PLAN_FRACTION of it.
    1 when not even two fit (a job that needs tiles or a shorter history runs alone)."""
    if budget is None or cap <= 1:
        return max(1, cap)
    room = budget * memory.PLAN_FRACTION
    fits = lambda n: memory.estimate_bytes(params, shape, n, bf16) <= room  # noqa: E731
    low, high = 1, cap
    while low < high:           # the estimate grows with the batch: bisect
        mid = (low + high + 1) // 2
        low, high = (mid, high) if fits(mid) else (low, mid - 1)
    return low


def room_for(total: int | None, batch: int, inputs_each: int) -> int | None:
    """A worker's budget less what `batch` jobs' decoded inputs hold (run/held.py)."""
    return None if total is None else max(0, total - batch * inputs_each)


def batch_size_within(params: Params, shape: tuple[int, int], total: int | None, inputs_each: int,
                      bf16: bool, most: int) -> int:
    """The most jobs (≤ `most`) whose estimate fits together with each one's decoded inputs."""
    size = most
    while size > 1 and batch_capacity(params, shape, room_for(total, size, inputs_each), bf16, size) < size:
        size -= 1
    return size


def batch_plan(plan: memory.MemoryPlan, params: Params, shape: tuple[int, int], batch: int,
               bf16: bool) -> memory.MemoryPlan:
    """The plan of one job as it runs in a batch of `batch` like it: the batch's peak."""
    if batch <= 1:
        return plan
    return replace(plan, peak=memory.estimate_bytes(params, shape, batch, bf16), batch=batch)


def plan_rows(jobs: list[tuple[Params, tuple[int, int] | None, int]], device: str, sharing: int,
              limit: int | None) -> tuple[int | None, list[dict[str, Any]]]:
    """`plan`'s table: the plan a worker on `device` makes for each (params, content shape),
    with the budget a worker fixes at its start (the same one) less the bytes the job's
    decoded inputs hold (run/held.py: the worker takes them off too), grouped into rows of
    equal output size and choice; and that budget."""
    budget = worker_budget(limit, device, sharing)
    rows: dict[tuple, dict[str, Any]] = {}
    for params, shape, inputs in jobs:
        shape = shape or (params.size, params.size)
        h, w = scaled_size(*shape, params.size)
        room = None if budget.bytes is None else max(0, budget.bytes - inputs)
        held = budget.held + (inputs if limit is not None else 0)
        try:
            plan = memory.plan_job(params, shape, room, bf16=device.startswith("cuda"), held=held)
            mode = plan.describe()["mode"]
            optimizer = plan.optimizer + (f" (history {plan.history})" if plan.optimizer == "lbfgs" else "")
            peak, notes = plan.peak, "; ".join(plan.notes)
        except DeviceError as err:
            mode, optimizer, peak, notes = "refused", "-", None, str(err)
        row = rows.setdefault((w, h, mode, optimizer, peak), {"size": f"{w}×{h}", "jobs": 0, "mode": mode,
                                                              "optimizer": optimizer, "peak": peak, "notes": notes})
        row["jobs"] += 1
    return budget.bytes, list(rows.values())

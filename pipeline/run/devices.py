"""Which devices a command may use: checked once, in the parent, before any worker starts.

`run`, `run --dry-run`, `plan` and `stylize` all call `check_devices`. A worker sees its GPU as
cuda:0 (the local executor pins it with CUDA_VISIBLE_DEVICES), so an error raised inside the
worker would name cuda:0 whatever was asked, after a traceback per worker; the parent knows
what the user asked and what this machine has.

`plan` and `--dry-run` must stay fast (no torch, tests/test_fast_commands.py), so devices are
counted only when a CUDA device is asked for (or a name is unknown, to say what exists), and
without torch where the machine has no GPU driver at all: no /proc/driver/nvidia/version
(NVIDIA) and no /dev/kfd (ROCm builds of torch, which also answer to `cuda`). Only a machine
with a driver loads torch to count, as a run there would anyway.
"""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable, Sequence

from ..errors import DeviceError

if TYPE_CHECKING:   # torch loads inside a worker only
    import torch

_CUDA = re.compile(r"cuda(?::([0-9]+))?")
_DRIVER_FILES = ("/proc/driver/nvidia/version", "/dev/kfd")


def cuda_device_count() -> int:
    """CUDA devices this process sees (CUDA_VISIBLE_DEVICES applies); 0 without a GPU driver."""
    if not any(os.path.exists(path) for path in _DRIVER_FILES):
        return 0   # torch could see none either: say so without loading it
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def check_devices(asked: str | Sequence[str] | None, source: str, local: bool = True,
                  count: Callable[[], int] | None = None) -> None:
    """Raise one DeviceError line unless every device in `asked` (auto | cpu | names) exists.

    `source` names where the devices came from ("--device", "m.yaml: devices"). `count`
    counts this machine's CUDA devices (default: `cuda_device_count`, looked up at call time,
    so tests can replace it). `local=False`: the devices are on other machines (a Ray
    cluster's, which plan_ray_slots counts), so only their names are checked here.
    """
    names = _names(asked)
    unknown = [n for n in names if n != "cpu" and not _CUDA.fullmatch(n)]
    cuda = [n for n in names if _CUDA.fullmatch(n)]
    if unknown and not local:
        raise DeviceError(_unknown(source, unknown))
    if not local or (not unknown and not cuda):
        return
    total = (count or cuda_device_count)()
    have = _have(total)
    if unknown:
        raise DeviceError(f"{_unknown(source, unknown)}; {have}")
    missing = [n for n in cuda if _index(n) >= total]
    if missing:
        use = "cpu or auto" if total == 0 else f"{_range(total)}, cpu or auto"
        raise DeviceError(f"{source} {', '.join(missing)}: {have}; use {use}")


def _unknown(source: str, names: list[str]) -> str:
    return f"{source} {', '.join(names)}: unknown device; use auto, cpu, cuda or cuda:N (CUDA GPUs)"


def _names(asked: str | Sequence[str] | None) -> list[str]:
    if asked is None or asked == "auto":
        return []
    return [asked] if isinstance(asked, str) else list(asked)


def _index(name: str) -> int:
    match = _CUDA.fullmatch(name)
    return int(match.group(1)) if match and match.group(1) else 0


def _range(total: int) -> str:
    return "cuda:0" if total == 1 else f"cuda:0 to cuda:{total - 1}"


def _have(total: int) -> str:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f" visible (CUDA_VISIBLE_DEVICES={visible})" if visible is not None else ""
    if total == 0:
        return f"this machine has no CUDA device{where}"
    return f"this machine has {total} CUDA device{'s' if total > 1 else ''}{where} ({_range(total)})"


def resolve_device(spec: str) -> torch.device:
    """auto | cpu | cuda | cuda:N -> a device that exists, or a DeviceError saying what to use
    (inside a worker; run/worker.py re-exports it)."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or (spec.startswith("cuda:") and spec[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"device {spec} was asked for but CUDA is not available here; use --device cpu or auto")
        index = int(spec[5:]) if ":" in spec else 0
        if index >= torch.cuda.device_count():
            raise DeviceError(f"device {spec} does not exist (this machine has {torch.cuda.device_count()} GPU(s))")
        return torch.device(spec)
    raise DeviceError(f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N")

"""What this machine's CPU memory has free: MemAvailable, or a container's (Slurm job's) limit
less its use when that is less."""
from __future__ import annotations

import os
from pathlib import Path


def cpu_free() -> int | None:
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

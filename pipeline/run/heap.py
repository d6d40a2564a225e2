"""Keep a CPU worker's resident set near the bytes it really uses (glibc's malloc).

glibc serves blocks below its mmap threshold from its heap, and raises that threshold up to
32 MiB as large blocks are freed. A tiled evaluation allocates and frees crops' activations
of many sizes (border tiles are smaller), so the heap keeps freed holes it cannot return and
the resident set ends up far above what is alive: at 1536 px in 2 GB the peak RSS fell from
2.11 GB to 1.61 GB with the threshold fixed at 1 MiB, for about 4 % more CPU time (the
kernel now zeroes pages on each large allocation; docs/performance.md). So a CPU worker
that has to respect a memory limit, or whose job has to be tiled, fixes the threshold: blocks
of 1 MiB and more come from mmap and go back to the system when freed.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_MMAP_THRESHOLD = -3     # mallopt parameter (malloc.h); setting it also stops the dynamic raise
THRESHOLD = 1 << 20
_done: bool | None = None


def bound_heap() -> bool:
    """Fix glibc's mmap threshold at THRESHOLD for this process (once); False where there is
    no glibc (macOS, musl) or it refuses."""
    global _done
    if _done is None:
        _done = False
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, THRESHOLD))
            except (OSError, AttributeError):
                pass
    return _done

"""run/heap.py: with glibc's mmap threshold fixed, freed large blocks leave the resident set."""
from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_PROGRAM = r"""
import os, sys
from pipeline.run.heap import bound_heap
page = os.sysconf("SC_PAGE_SIZE")
rss = lambda: int(open("/proc/self/statm").read().split()[1]) * page
print(bound_heap(), bound_heap())
big = bytearray(24 << 20)     # freeing a large mmapped block is what makes glibc raise the threshold
del big
blocks = [bytearray(3 << 20) for _ in range(100)]     # 300 MiB, touched (zero-filled)
kept = blocks[::10]                                   # 10 stay alive
del blocks
before = rss()
holes = [bytearray(1 << 19) for _ in range(40)]       # small ones still come from the heap
print(before, sum(len(b) for b in kept))
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_freed_large_blocks_leave_the_resident_set_once_the_heap_is_bounded():
    out = subprocess.run([sys.executable, "-c", _PROGRAM], cwd=ROOT, capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}).stdout.split("\n")
    assert out[0] == "True True"                      # applied, and idempotent
    rss, kept = map(int, out[1].split())
    # 270 MiB were freed: with blocks from mmap they are gone at once; what is resident is
    # the 30 MiB kept plus the interpreter (well under 200 MiB), not the 300 MiB allocated.
    assert rss < kept + 200 * 2**20, (rss, kept)

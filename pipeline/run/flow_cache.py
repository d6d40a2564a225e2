"""Optical-flow cache: a clip's forward and backward flows, computed once and shared by its jobs.

Every style and parameter set of a clip warps with the same flows, so they are computed once
per (clip bytes, frame selection, frame size) and kept beside the style targets, the same way:
safetensors written atomically, a file lock against two workers computing one entry, a
checksum checked on every read, a bad entry recomputed and never trusted.

Flows are stored as float16 (half the disk; ±0.03 px at 64 px of motion) and rounded to it
when computed too, so a run that computes them and one that reads them warp identically.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Callable

import torch
from filelock import FileLock, Timeout
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from ..engine.flow import FLOW_VERSION
from ..imaging import atomic_write_bytes

Flows = dict[str, torch.Tensor]          # "forward", "backward": (N-1, 2, H, W)
log = logging.getLogger(__name__)


def flow_key(clip_sha256: str, selection: dict, shape: tuple[int, int], frames: int) -> str:
    blob = json.dumps({"flow": FLOW_VERSION, "clip": clip_sha256, "selection": selection,
                       "shape": list(shape), "frames": frames}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FlowCache:
    """`<root>/<digest[:2]>/<digest>.safetensors`; `root` is normally `<style cache>/flows`."""

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0}

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get_or_compute(self, digest: str, shape: tuple[int, ...], compute: Callable[[], Flows]) -> tuple[Flows, bool]:
        """The flows for `digest` (each of `shape`) and whether they were read from disk."""
        path = self.path_for(digest)
        if self.enabled:
            flows = self._read(path, digest, shape, report=False)   # fast path, no lock
            if flows is not None:
                self.stats["hits"] += 1
                return flows, True
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                lock = FileLock(str(path) + ".lock", timeout=600)
                lock.acquire()
            except (OSError, Timeout) as err:
                log.warning("flow cache %s is not writable (%s); flows are computed, not cached", self.root, err)
                return self._compute(compute), False
            try:
                flows = self._read(path, digest, shape)   # another worker may have written it meanwhile
                if flows is not None:
                    self.stats["hits"] += 1
                    return flows, True
                flows = self._compute(compute)
                meta = {"key": digest, "sha256": _checksum(flows)}
                try:
                    atomic_write_bytes(path, save(flows, metadata=meta))
                except OSError as err:
                    log.warning("cannot write the flow cache entry %s (%s)", path, err)
                return flows, False
            finally:
                lock.release()
        return self._compute(compute), False

    def _compute(self, compute: Callable[[], Flows]) -> Flows:
        self.stats["misses"] += 1
        return {k: v.detach().to("cpu", torch.float16).contiguous() for k, v in compute().items()}

    def _read(self, path: Path, digest: str, shape: tuple[int, ...], report: bool = True) -> Flows | None:
        """A validated entry, or None; `report` logs and counts a bad one (once, under the lock)."""
        if not path.exists():
            return None
        try:
            flows = load_file(str(path))
            with open(path, "rb") as fh:
                meta = json.loads(fh.read(int.from_bytes(fh.read(8), "little"))).get("__metadata__", {})
            valid = (set(flows) == {"forward", "backward"} and meta.get("key") == digest
                     and all(tuple(f.shape) == tuple(shape) and torch.isfinite(f).all() for f in flows.values())
                     and meta.get("sha256") == _checksum(flows))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            valid, why = False, f"is unreadable ({err})"
        else:
            why = "does not match its key or checksum"
        if not valid:
            if report:
                self.stats["corrupt"] += 1
                log.warning("flow cache entry %s %s; recomputing", path, why)
            return None
        return flows


def _checksum(flows: Flows) -> str:
    digest = hashlib.sha256()
    for name in sorted(flows):
        digest.update(name.encode())
        digest.update(flows[name].to("cpu", torch.float16).contiguous().numpy().tobytes())
    return digest.hexdigest()

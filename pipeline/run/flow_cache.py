"""Optical-flow cache: a clip's forward and backward flows, computed once and shared by its jobs.

Every style and parameter set of a clip warps with the same flows, so they are computed once
per (clip bytes, frame selection, frame size) and kept beside the style targets, the same way:
a safetensors file written atomically, a file lock against two workers computing one entry, a
checksum checked on every read, a bad entry recomputed and never trusted.

Flows are stored as float16 (half the disk; ±0.03 px at 64 px of motion) and always read back
from the file, so a run that computes them and one that reads them warp identically. They are
streamed, never held for the whole clip (60 frames at 512 × 384 are 93 MB of them, 0.5 GB while
computed in float32): each pair of frames' flows is written as it is computed, and a clip
reads the pair of the frame it is on (`FlowFile.pair`). Without a cache (or an unwritable one)
the same file lives in an anonymous temporary file, gone when the clip's job ends.
"""
from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from pathlib import Path
from typing import IO, Callable

import numpy as np
import torch
from filelock import FileLock, Timeout

from ..engine.flow import FLOW_VERSION
from ..imaging import atomic_file

PairFlows = Callable[[int], tuple[torch.Tensor, torch.Tensor]]   # k -> flow(k→k+1), flow(k+1→k)
NAMES = ("forward", "backward")
_LAYOUT = 2      # streamed pairs with a per-pair checksum chain (entries of layout 1 are not read)
log = logging.getLogger(__name__)


def flow_key(clip_sha256: str, selection: dict, shape: tuple[int, int], frames: int) -> str:
    blob = json.dumps({"flow": FLOW_VERSION, "clip": clip_sha256, "selection": selection,
                       "shape": list(shape), "frames": frames, "layout": _LAYOUT}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class FlowFile:
    """An open flow entry: (N-1, 2, H, W) float16 "forward" and "backward", read a pair at a time."""

    def __init__(self, fh: IO[bytes], shape: tuple[int, ...], start: int):
        self.fh, self.shape, self.start = fh, tuple(shape), start
        self.pairs, self.pair_bytes = shape[0], int(np.prod(shape[1:])) * 2

    def pair(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """forward[k], backward[k] as (1, 2, H, W) float16 CPU tensors."""
        return self._read(0, k), self._read(1, k)

    def _read(self, which: int, k: int) -> torch.Tensor:
        self.fh.seek(self.start + (which * self.pairs + k) * self.pair_bytes)
        data = np.frombuffer(self.fh.read(self.pair_bytes), dtype=np.float16)
        return torch.from_numpy(data.copy()).reshape(1, *self.shape[1:])

    def close(self) -> None:
        self.fh.close()


def _header(shape: tuple[int, ...], digest: str, checksum: str) -> bytes:
    size = int(np.prod(shape)) * 2
    meta = {name: {"dtype": "F16", "shape": list(shape), "data_offsets": [i * size, (i + 1) * size]}
            for i, name in enumerate(NAMES)}
    meta["__metadata__"] = {"key": digest, "sha256": checksum}
    text = json.dumps(meta, sort_keys=True).encode()
    return len(text).to_bytes(8, "little") + text


def _write(fh: IO[bytes], shape: tuple[int, ...], digest: str, compute: PairFlows) -> None:
    """Stream a safetensors entry into `fh`: the header with the checksum filled in last."""
    header = _header(shape, digest, "0" * 64)
    fh.write(header)
    entry = FlowFile(fh, shape, len(header))
    chain = hashlib.sha256()
    for k in range(shape[0]):
        for which, f in enumerate(compute(k)):
            data = f.detach().to("cpu", torch.float16).contiguous().numpy().tobytes()
            chain.update(data)
            fh.seek(entry.start + (which * entry.pairs + k) * entry.pair_bytes)
            fh.write(data)
    fh.seek(0)
    fh.write(_header(shape, digest, chain.hexdigest()))   # same length: 64 hex digits
    fh.flush()


class FlowCache:
    """`<root>/<digest[:2]>/<digest>.safetensors`; `root` is normally `<style cache>/flows`."""

    def __init__(self, root: str | Path, enabled: bool = True):
        self.root, self.enabled = Path(root), enabled
        self.stats = {"hits": 0, "misses": 0, "corrupt": 0}

    def path_for(self, digest: str) -> Path:
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get_or_compute(self, digest: str, shape: tuple[int, ...], compute: PairFlows) -> tuple[FlowFile, bool]:
        """The flows for `digest` (each of `shape`, (N-1, 2, H, W)), open, and whether they
        were on disk already. `compute(k)` gives pair k's forward and backward flow."""
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
                return self._anonymous(digest, shape, compute), False
            try:
                flows = self._read(path, digest, shape)   # another worker may have written it meanwhile
                if flows is not None:
                    self.stats["hits"] += 1
                    return flows, True
                try:
                    self._store(path, digest, shape, compute)
                except OSError as err:
                    log.warning("cannot write the flow cache entry %s (%s)", path, err)
                    return self._anonymous(digest, shape, compute), False
                flows = self._read(path, digest, shape)
                if flows is None:
                    raise OSError(f"flow cache entry {path} did not read back")
                return flows, False
            finally:
                lock.release()
        return self._anonymous(digest, shape, compute), False

    def _store(self, path: Path, digest: str, shape: tuple[int, ...], compute: PairFlows) -> None:
        self.stats["misses"] += 1
        with atomic_file(path, "w+b") as fh:   # temp + fsync + rename: never a torn entry
            _write(fh, shape, digest, compute)

    def _anonymous(self, digest: str, shape: tuple[int, ...], compute: PairFlows) -> FlowFile:
        """Not cached: the same entry in a temporary file that disappears when closed."""
        self.stats["misses"] += 1
        fh = tempfile.TemporaryFile()
        _write(fh, shape, digest, compute)
        return FlowFile(fh, shape, 8 + int.from_bytes(_peek(fh, 0, 8), "little"))

    def _read(self, path: Path, digest: str, shape: tuple[int, ...], report: bool = True) -> FlowFile | None:
        """A validated entry, open, or None; `report` logs and counts a bad one (once, under the lock).
        Validated a pair at a time: the checksum chain and finite values, never all at once."""
        if not path.exists():
            return None
        fh = None
        try:
            fh = open(path, "rb")
            length = int.from_bytes(fh.read(8), "little")
            if not 0 < length < 2**20:
                raise ValueError("bad header length")
            meta = json.loads(fh.read(length))
            expected = json.loads(_header(shape, digest, meta.get("__metadata__", {}).get("sha256", ""))[8:])
            valid = meta == expected
            entry = FlowFile(fh, shape, 8 + length)
            if valid:
                chain = hashlib.sha256()
                for k in range(entry.pairs):
                    for f in entry.pair(k):
                        if len(f.numpy().tobytes()) != entry.pair_bytes or not torch.isfinite(f).all():
                            raise ValueError("short or non-finite data")
                        chain.update(f.numpy().tobytes())
                valid = chain.hexdigest() == meta["__metadata__"]["sha256"]
        except (OSError, ValueError, RuntimeError, KeyError, TypeError) as err:
            valid, why = False, f"is unreadable ({err})"
        else:
            why = "does not match its key or checksum"
        if not valid:
            if fh is not None:
                fh.close()
            if report:
                self.stats["corrupt"] += 1
                log.warning("flow cache entry %s %s; recomputing", path, why)
            return None
        return entry


def _peek(fh: IO[bytes], offset: int, size: int) -> bytes:
    fh.seek(offset)
    return fh.read(size)

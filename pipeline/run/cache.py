"""Style-target cache: style targets computed once per style and shared by all runs and processes.

An entry is keyed by everything that changes the targets: the style image's bytes, the long side
it is resized to, the layers, pooling, weights id, dtype, colour variant, the style loss (each
kind stores its own target type) and a mask on the style image. Entries are
safetensors files written atomically; a file lock keeps two workers from computing the same
entry; every read is validated, and a bad entry is recomputed, never trusted.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from filelock import FileLock, Timeout

from ..engine.layers import min_side, scaled_size
from ..imaging import atomic_write_bytes, image_shape
from .jobs import content_sha256
from ..params import Params

if TYPE_CHECKING:   # torch and safetensors load on first use: `plan` reads keys and paths only
    import torch

ENV_VAR = "NST_BATCH_CACHE_DIR"
FORMAT_VERSION = 1
LOCK_TIMEOUT = 600.0   # seconds to wait while another process computes the same entry
log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("nst-batch")) / "style-targets"


@dataclass(frozen=True)
class TargetKey:
    style_sha256: str
    long_side: int
    layers: tuple[str, ...]
    pooling: str
    weights_id: str
    dtype: str = "float32"
    variant: str = "rgb"      # rgb | luminance:<content sha> | histogram:<content sha>
    loss: str = "gram"        # the style loss kind: each stores its own target type
    mask: str = ""            # sha256 of the mask on the style image (use only that part), "" none

    def digest(self) -> str:
        fields = dict(self.__dict__)
        # At their defaults the newer fields leave the digest what it was: older caches stay valid.
        for name, default in (("loss", "gram"), ("mask", "")):
            if fields[name] == default:
                del fields[name]
        blob = json.dumps({"v": FORMAT_VERSION, **fields, "layers": list(self.layers)}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:32]


def key_for(params: Params, style_path: str, content_path: str, stage_side: int, weights: str,
            mask_path: str | None = None) -> TargetKey:
    """The key of one style image's targets for a stage whose output long side is `stage_side`.

    Colour preservation changes the style image as a function of the content image, so those
    variants are keyed by the content's bytes too; a mask on the style image by its bytes.
    """
    variant = "rgb"
    if params.preserve_color != "none":
        variant = f"{params.preserve_color}:{content_sha256(content_path)}"
    return TargetKey(content_sha256(style_path), style_side(params, stage_side, image_shape(style_path)),
                     tuple(params.style_layers),
                     params.pooling, weights, "float32", variant, params.style_loss,
                     content_sha256(mask_path) if mask_path else "")


def style_side(params: Params, stage_side: int, style_shape: tuple[int, int] | None = None) -> int:
    """Long side of the style image for a stage: `style_scale` × the stage's, raised until the
    short side reaches the deepest style layer (a wide style at a small coarse stage would
    otherwise be too small for conv5_1 even though the content fits)."""
    side = max(16, round(stage_side * params.style_scale))
    if style_shape is not None:
        need = min_side(params.style_layers)
        while min(scaled_size(*style_shape, side)) < need and side < 64 * need:
            side += 1
    return side


def style_read_hint(params: Params, path: str) -> int:
    """The largest side a job resizes style image `path` to: its final stage's (`style_side`
    grows with the stage), so `read_image` may decode it reduced to about twice that."""
    return style_side(params, params.size, image_shape(path))


class StyleTargetCache:
    """Disk cache of Gram targets with an in-process LRU in front of it.

    `stats` counts hits, misses and the style forward passes actually run.
    """

    def __init__(self, root: str | Path | None = None, memory_items: int = 64, enabled: bool = True):
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = enabled
        self.memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()
        self.memory_items = memory_items
        self.stats = {"hits": 0, "misses": 0, "forward_passes": 0, "corrupt": 0, "write_errors": 0,
                      "lock_timeouts": 0}
        self._warned_readonly = False

    def path_for(self, key: TargetKey) -> Path:
        digest = key.digest()
        return self.root / digest[:2] / f"{digest}.safetensors"

    def get_or_compute(self, key: TargetKey, compute: Callable[[], dict[str, torch.Tensor]]) -> tuple[dict[str, torch.Tensor], bool]:
        """The targets for `key` and whether they were a hit (memory or disk)."""
        digest = key.digest()
        if digest in self.memory:
            self.memory.move_to_end(digest)
            self.stats["hits"] += 1
            return self.memory[digest], True
        grams, hit = self._disk_get_or_compute(key, compute)
        self.stats["hits" if hit else "misses"] += 1
        self.memory[digest] = grams
        while len(self.memory) > self.memory_items:
            self.memory.popitem(last=False)
        return grams, hit

    def _disk_get_or_compute(self, key: TargetKey, compute: Callable[[], dict[str, torch.Tensor]]):
        if not self.enabled:
            return self._compute(compute), False
        path = self.path_for(key)
        grams = self._read(path, key, report=False)   # fast path, no lock
        if grams is not None:
            return grams, True
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            lock = FileLock(str(path) + ".lock", timeout=LOCK_TIMEOUT)
            lock.acquire()
        except Timeout:   # before OSError, which it subclasses: a busy lock is not a read-only cache
            self.stats["lock_timeouts"] += 1
            log.warning("style-target cache: waited %gs for %s.lock, held by another process (still "
                        "computing the same targets, or hung); computing them here without the cache",
                        LOCK_TIMEOUT, path)
            return self._compute(compute), False
        except OSError as err:
            self._warn_unwritable(err)
            return self._compute(compute), False
        try:
            # Another process may have written it while we waited for the lock.
            grams = self._read(path, key)
            if grams is not None:
                return grams, True
            grams = self._compute(compute)
            self._write(path, key, grams)
            return grams, False
        finally:
            lock.release()

    def _compute(self, compute: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        import torch

        self.stats["forward_passes"] += 1
        return {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in compute().items()}

    def _read(self, path: Path, key: TargetKey, report: bool = True) -> dict[str, torch.Tensor] | None:
        """A validated entry, or None; `report` logs and counts a bad one (once, under the lock)."""
        import torch
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.exists():
            return None
        try:
            grams = load_file(str(path))
            with open(path, "rb") as fh:
                header_len = int.from_bytes(fh.read(8), "little")
                header = json.loads(fh.read(header_len))
            # "__metadata__": null (or a header that is no mapping) is as bad as a wrong key.
            meta = header.get("__metadata__") if isinstance(header, dict) else None
            meta = meta if isinstance(meta, dict) else {}
            valid = (meta.get("key") == key.digest() and _kind(key.loss).valid(grams, key.layers)
                     and meta.get("sha256") == _checksum(grams))
        except (SafetensorError, OSError, ValueError, RuntimeError) as err:
            if not report:
                return None
            log.warning("style-target cache entry %s is unreadable (%s); recomputing", path, err)
            self.stats["corrupt"] += 1
            return None
        if not valid:
            if not report:
                return None
            log.warning("style-target cache entry %s does not match its key or checksum; recomputing", path)
            self.stats["corrupt"] += 1
            return None
        return grams

    def _write(self, path: Path, key: TargetKey, grams: dict[str, torch.Tensor]) -> None:
        from safetensors.torch import save

        meta = {"key": key.digest(), "description": json.dumps(key.__dict__, default=list),
                "sha256": _checksum(grams)}
        try:
            atomic_write_bytes(path, save(grams, metadata=meta))
        except OSError as err:
            self._warn_unwritable(err)

    def _warn_unwritable(self, err: Exception) -> None:
        self.stats["write_errors"] += 1
        if not self._warned_readonly:
            log.warning("style-target cache %s is not writable (%s); targets are computed but not "
                        "cached (set --cache-dir or %s to a writable folder)", self.root, err, ENV_VAR)
            self._warned_readonly = True


def _kind(loss: str):
    from ..engine import style_loss

    return style_loss.get(loss)


def _checksum(grams: dict[str, torch.Tensor]) -> str:
    """sha256 of the Gram values: a flipped bit on disk would otherwise pass every shape check
    and silently steer every job that uses the entry."""
    import torch

    digest = hashlib.sha256()
    for name in sorted(grams):
        digest.update(name.encode())
        digest.update(grams[name].detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return digest.hexdigest()

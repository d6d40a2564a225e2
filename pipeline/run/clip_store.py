"""A clip's content frames, spooled: decoded once, held on disk, read one at a time.

A clip is never held in memory whole (at most 10,000 frames; 60 frames at 512 × 384 are
35 MB as 8 bits, 140 MB as floats): the frames are decoded one by one into an anonymous
temporary file (3 bytes a pixel, gone when the job ends or its process dies) and the chain
reads the frame it is on. With the flows (run/flow_cache.py) read a pair at a time and the
mp4 encoded from the saved frames, what a clip job holds does not grow with its length.
"""
from __future__ import annotations

import tempfile
from typing import Iterable

import numpy as np
import torch

from ..engine import pixels


class FrameSpool:
    """(1, 3, H, W) uint8 frames by index; every frame enlarged to `long_side` if smaller."""

    def __init__(self, frames: Iterable[np.ndarray], long_side: int):
        self.fh = tempfile.TemporaryFile()
        self.count, self.shape = 0, (0, 0)
        for array in frames:
            frame = torch.from_numpy(np.require(array, np.uint8, ["C", "W"])).permute(2, 0, 1).unsqueeze(0)
            if max(frame.shape[-2:]) != long_side:
                # A clip smaller than `size` is enlarged, as a photo would be, then kept as 8 bits.
                frame = pixels.resize_long_side(frame.float().div(255), long_side).mul(255).round().byte()
            self.shape = tuple(frame.shape[-2:])
            self.fh.write(frame.contiguous().numpy().tobytes())
            self.count += 1
        self.frame_bytes = 3 * self.shape[0] * self.shape[1]
        self.fh.flush()

    def frame(self, index: int) -> torch.Tensor:
        self.fh.seek(index * self.frame_bytes)
        data = np.frombuffer(self.fh.read(self.frame_bytes), dtype=np.uint8)
        return torch.from_numpy(data.copy()).reshape(1, 3, *self.shape)

    def close(self) -> None:
        self.fh.close()

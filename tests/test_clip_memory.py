"""A clip job's memory does not grow with the clip's length: frames and flows are streamed.

Run in-process, a clip of 4 frames and one of 8 (same size, same settings); after each frame
(the clip's test hook `after_clip_frame`) every live frame-shaped tensor (last two sides the
frame's: frames, flows, masks, images) and every array the clip job keeps is summed. The
largest sum must be the same for both lengths: the job holds the frame it is on, the previous
result and one pair of flows, not the clip (before streaming the 8-frame clip held 56 KB more
at 32 × 32: its frames, its flows and the finished frames kept for the mp4).
"""
from __future__ import annotations

import gc
import warnings

import numpy as np
import pytest
import torch

pytest.importorskip("cv2")
pytest.importorskip("av")

from pipeline import fault_hooks  # noqa: E402
from pipeline.params import params_from_mapping  # noqa: E402
from pipeline.run import clips  # noqa: E402
from pipeline.run.cache import StyleTargetCache  # noqa: E402
from pipeline.run.jobs import make_job  # noqa: E402
from pipeline.run.worker import JobRunner  # noqa: E402
from pipeline.video import Clip  # noqa: E402

from test_video import sliding, write_frames, write_style  # noqa: E402

SIZE = 32


def _held_bytes(shape: tuple[int, int]) -> int:
    seen, total = set(), 0
    with warnings.catch_warnings():   # isinstance on every live object touches deprecated aliases
        warnings.simplefilter("ignore")
        objects = [o for o in gc.get_objects() if isinstance(o, (torch.Tensor, clips._Clip))]
    for obj in objects:
        if isinstance(obj, torch.Tensor) and obj.dim() >= 2 and tuple(obj.shape[-2:]) == shape:
            key = obj.untyped_storage().data_ptr()
            if key not in seen:
                seen.add(key)
                total += obj.untyped_storage().nbytes()
        elif isinstance(obj, clips._Clip):
            stack = list(vars(obj).values())
            while stack:
                value = stack.pop()
                if isinstance(value, np.ndarray):
                    total += value.nbytes
                elif isinstance(value, (list, tuple)):
                    stack.extend(value)
    return total


def _peak_held(tmp_path, frames: int, monkeypatch, use_cache: bool) -> int:
    folder = write_frames(tmp_path / f"clip{frames}", sliding(frames, SIZE))
    style = write_style(tmp_path / "style.png")
    peaks: list[int] = []
    monkeypatch.setattr(fault_hooks, "after_clip_frame", lambda t, count: peaks.append(_held_bytes((SIZE, SIZE))))
    runner = JobRunner(torch.device("cpu"), StyleTargetCache(tmp_path / f"cache{frames}", enabled=use_cache))
    job = make_job(folder, [(style, 1.0)], params_from_mapping({"size": SIZE, "steps": 2}), clip=Clip("frames", str(folder)))
    events: list[tuple] = []
    runner.run_group([job], tmp_path / f"out{frames}", events.append)
    record = [e[2] for e in events if e[0] == "record"][0].as_dict()
    assert record["status"] == "done", record["error"]
    assert record["clip"]["frame_count"] == frames and len(peaks) == frames
    return max(peaks)


@pytest.mark.parametrize("use_cache", [True, False])
def test_what_a_clip_job_holds_does_not_grow_with_its_length(tmp_path, monkeypatch, use_cache):
    short, long = _peak_held(tmp_path, 4, monkeypatch, use_cache), _peak_held(tmp_path, 8, monkeypatch, use_cache)
    assert short > 0
    assert long <= short + 3 * SIZE * SIZE      # not even one more 8-bit frame

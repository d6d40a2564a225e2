"""Clip entries of a manifest's `content`: `{video: clips/walk.mp4}` or `{frames: clips/walk/}`.

A clip is one job per style and parameter set (a chain of frames, docs/video.md); plain paths
and globs stay independent photos. Checked here, before any job runs: the keys and their
types, that the file or folder exists, the `video` extra is installed, a frames folder is
numbered without gaps and keeps at least two frames. What needs decoding (an unreadable video,
frames of mixed sizes, a time range with under two frames) fails its jobs with one line.
"""
from __future__ import annotations

import math
from typing import Any

from ..errors import InputError
from ..video import Clip, frame_files, missing_extra, select
from .inputs import PATH_HINT, InputChecker, file_kind, resolve
from .yaml_reader import INVALID, describe, has_invalid, is_number

KEYS = {"video": ("video", "frame_step", "max_frames", "start", "end"),
        "frames": ("frames", "frame_step", "max_frames", "fps")}


def check_clip(inputs: InputChecker, path: tuple, item: dict) -> Clip | None:
    """The Clip a `content` mapping names, or None with every problem reported."""
    if has_invalid(item):
        return None
    kinds = [k for k in KEYS if k in item]
    if len(kinds) != 1:
        inputs.add(path, "a clip entry names either video: <file> or frames: <folder>, got "
                         + (" and ".join(kinds) if kinds else f"keys {', '.join(map(str, item))}"))
        return None
    kind = kinds[0]
    inputs.report.unknown_keys(path, item, KEYS[kind])
    hint = missing_extra()
    if hint is not None:
        inputs.add(path, hint)
        return None
    before = len(inputs.report)
    step = _integer(inputs, path + ("frame_step",), item.get("frame_step", 1), 1)
    most = item.get("max_frames")
    most = None if most is None else _integer(inputs, path + ("max_frames",), most, 2)
    start = _seconds(inputs, path + ("start",), item.get("start", 0.0))
    end = item.get("end")
    if end is not None:
        end = _seconds(inputs, path + ("end",), end)
        if end is not None and start is not None and end <= start:
            inputs.add(path + ("end",), f"must be after start ({start:g}s), got {end:g}s")
    fps = item.get("fps")
    if fps is not None and (not is_number(fps) or not math.isfinite(fps) or fps <= 0):
        inputs.add(path + ("fps",), f"expected frames per second > 0, got {describe(fps)}")
    value = item[kind]
    if not isinstance(value, str) or not value.strip() or "\0" in value:
        inputs.add(path + (kind,), f"expected a {'video file' if kind == 'video' else 'folder'} path, got {describe(value)}")
        return None
    target = resolve(inputs.base / value)
    found = file_kind(target) if target is not None else None
    if kind == "video" and found != "file":
        inputs.add(path + (kind,), f"{value} is a folder; name a video file, or use frames: for a folder of frames"
                   if found == "dir" else f"video not found: {value}", hint=None if found == "dir" else PATH_HINT)
        return None
    if kind == "frames" and found != "dir":
        inputs.add(path + (kind,), f"{value} is a file; frames: names a folder of numbered frames"
                   if found == "file" else f"frames folder not found: {value}", hint=None if found == "file" else PATH_HINT)
        return None
    if len(inputs.report) > before:
        return None
    clip = Clip(kind, str(target), step, most, float(start or 0.0), None if end is None else float(end),
                None if fps is None else float(fps))
    if kind == "frames":
        try:
            kept = len(select(len(frame_files(target)), clip))
        except InputError as err:
            inputs.add(path + (kind,), str(err))
            return None
        if kept < 2:
            inputs.add(path, f"the clip {value} keeps {kept} frame(s) with frame_step {step}; a clip needs at least 2")
            return None
    return clip


def _integer(inputs: InputChecker, path: tuple, value: Any, low: int) -> int | None:
    if value is INVALID:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        inputs.add(path, f"expected an integer ≥ {low}, got {describe(value)}")
        return None
    return value


def _seconds(inputs: InputChecker, path: tuple, value: Any) -> float | None:
    if not is_number(value) or not math.isfinite(value) or value < 0:
        inputs.add(path, f"expected seconds ≥ 0, got {describe(value)}")
        return None
    return float(value)

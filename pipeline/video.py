"""Clips: the only module that reads video files and numbered-frame folders, and writes mp4.

A `Clip` names a video (decoded with PyAV) or a folder of numbered frames, and which of its
frames a job uses. PyAV and OpenCV come with the `video` extra (`pip install 'nst-batch[video]'`);
they are imported only when a clip is read or written, so photo batches never need them.
"""
from __future__ import annotations

import importlib.util
import os
import re
import tempfile
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from .errors import InputError, OutputError
from .imaging import IMAGE_EXTENSIONS, image_shape

INSTALL_HINT = "clips need PyAV and OpenCV, which are not installed: pip install 'nst-batch[video]'"
DEFAULT_FPS = 24.0          # playback rate of a frames folder's mp4 when the manifest names none
MAX_CLIP_FRAMES = 10_000    # per clip after selection: the frames of a job are held in memory
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class Clip:
    """A chain of frames: a video or a numbered-frames folder, and the selection from it."""
    kind: str                      # video | frames
    path: str                      # absolute: the video file or the frames folder
    frame_step: int = 1            # keep every n-th frame
    max_frames: int | None = None  # keep at most this many (after frame_step); None: all
    start: float = 0.0             # seconds into the video (video only)
    end: float | None = None       # seconds; None: to the end (video only)
    fps: float | None = None       # frames folder: playback rate of the mp4; None: DEFAULT_FPS

    def selection(self) -> dict[str, Any]:
        """What picks the frames (hashed into the job id, recorded in the sidecar)."""
        return {"kind": self.kind, "frame_step": self.frame_step, "max_frames": self.max_frames,
                "start": self.start, "end": self.end, "fps": self.fps}


def missing_extra() -> str | None:
    """The install hint when PyAV or OpenCV is missing, else None (no import: stays fast)."""
    if any(importlib.util.find_spec(name) is None for name in ("av", "cv2")):
        return INSTALL_HINT
    return None


def frame_files(folder: str | Path) -> list[Path]:
    """The numbered frames of a folder in order; InputError on a gap, mixed names or no frames.

    Frames are the image files whose stem ends in a number (`frame_0001.png`, `0001.jpg`); they
    must share one prefix and extension and be numbered without gaps (any start, any padding).
    """
    folder = Path(folder)
    try:
        names = sorted(n for n in os.listdir(folder)
                       if not n.startswith(".") and os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS)
    except OSError as err:
        raise InputError(f"cannot read the frames folder {folder}: {err.strerror or err}") from None
    numbered: dict[int, str] = {}
    kinds: set[tuple[str, str]] = set()
    for name in names:
        stem, ext = os.path.splitext(name)
        match = _NUMBERED.match(stem)
        if match is None:
            raise InputError(f"frames folder {folder}: {name} is not numbered; name frames like frame_000001.png")
        kinds.add((match.group(1), ext.lower()))
        number = int(match.group(2))
        if number in numbered:
            raise InputError(f"frames folder {folder}: {numbered[number]} and {name} have the same number")
        numbered[number] = name
    if not numbered:
        raise InputError(f"frames folder {folder} holds no numbered image files (frame_000001.png, ...)")
    if len(kinds) > 1:
        a, b = sorted(kinds)[:2]
        raise InputError(f"frames folder {folder} mixes names {a[0]}N{a[1]} and {b[0]}N{b[1]}; keep one clip per folder")
    order = sorted(numbered)
    for before, after in zip(order, order[1:]):
        if after != before + 1:
            raise InputError(f"frames folder {folder} has a gap: frame {before + 1} is missing after "
                             f"{numbered[before]}; renumber the frames without gaps")
    return [folder / numbered[n] for n in order]


def select(count: int, clip: Clip) -> list[int]:
    """Indices of the frames a clip keeps out of `count` (frame_step, then max_frames)."""
    kept = list(range(0, count, clip.frame_step))
    return kept[:clip.max_frames] if clip.max_frames is not None else kept


def clip_shape(clip: Clip) -> tuple[int, int] | None:
    """(H, W) of the clip's frames from headers only; None when unreadable (the job then fails)."""
    if clip.kind == "frames":
        try:
            return image_shape(frame_files(clip.path)[0])
        except InputError:
            return None
    try:
        import av

        with av.open(clip.path) as container:
            stream = container.streams.video[0]
            return (stream.codec_context.height, stream.codec_context.width)
    except Exception:  # any unreadable video: the worker reports the real error
        return None


def read_frames(clip: Clip, long_side: int) -> tuple[list[np.ndarray], float]:
    """The selected frames as (H, W, 3) uint8 arrays, shrunk to `long_side` if larger, and the
    playback rate of the result (frames per second). InputError on anything unreadable."""
    frames, fps = iter_frames(clip, long_side)
    return list(frames), fps


def iter_frames(clip: Clip, long_side: int) -> tuple[Iterator[np.ndarray], float]:
    """`read_frames` one frame at a time (a clip is never decoded into memory whole): the
    frames' iterator raises InputError on an unreadable frame, mixed sizes, or fewer than 2."""
    if clip.kind == "frames":
        frames, fps = _folder_frames(clip), clip.fps or DEFAULT_FPS
    else:
        frames = _video_frames(clip)
        fps = next(frames)
    return _checked(clip, frames, long_side), fps


def _checked(clip: Clip, frames: Iterator[np.ndarray], long_side: int) -> Iterator[np.ndarray]:
    count, first = 0, None
    for frame in frames:
        if first is None:
            first = frame.shape
        elif frame.shape != first:
            raise InputError(f"clip {clip.path} mixes frame sizes ({', '.join(f'{w}×{h}' for h, w, _ in sorted({first, frame.shape}))}); "
                             "resize its frames to one size")
        count += 1
        yield _shrink(frame, long_side)
    if count < 2:
        raise InputError(f"clip {clip.path} has {count} frame(s) after selection "
                         f"({_describe(clip)}); a clip needs at least 2")


def _describe(clip: Clip) -> str:
    parts = [f"frame_step {clip.frame_step}"]
    if clip.max_frames is not None:
        parts.append(f"max_frames {clip.max_frames}")
    if clip.kind == "video":
        parts.append(f"start {clip.start:g}s" + (f", end {clip.end:g}s" if clip.end is not None else ""))
    return ", ".join(parts)


def _folder_frames(clip: Clip) -> Iterator[np.ndarray]:
    from PIL import Image

    files = frame_files(clip.path)
    for index in select(len(files), clip)[:MAX_CLIP_FRAMES]:
        try:
            with Image.open(files[index]) as img:
                frame = np.asarray(img.convert("RGB"), dtype=np.uint8)
        except (OSError, SyntaxError, ValueError) as err:
            raise InputError(f"unreadable frame {files[index]} ({err})") from None
        yield frame


def _video_frames(clip: Clip) -> Iterator[Any]:
    """Yields the playback rate of the selection first, then its frames."""
    try:
        import av
    except ImportError:
        raise InputError(INSTALL_HINT) from None
    kept = 0
    try:
        with av.open(clip.path) as container:
            if not container.streams.video:
                raise InputError(f"{clip.path} holds no video stream")
            stream = container.streams.video[0]
            rate = float(stream.average_rate or stream.guessed_rate or DEFAULT_FPS)
            yield rate / clip.frame_step
            index = 0
            for number, frame in enumerate(container.decode(stream)):
                # frame.time is None for some streams: fall back on the frame count.
                t = frame.time if frame.time is not None else number / rate
                if t < clip.start - 1e-6:
                    continue
                if clip.end is not None and t >= clip.end - 1e-6:
                    break
                if index % clip.frame_step == 0:
                    yield frame.to_ndarray(format="rgb24")
                    kept += 1
                    if kept >= (clip.max_frames or MAX_CLIP_FRAMES):
                        break
                index += 1
    except InputError:
        raise
    except Exception as err:  # PyAV raises its own FFmpeg error family and OSError subclasses
        raise InputError(f"cannot decode video {clip.path}: {str(err).splitlines()[0] if str(err) else type(err).__name__}; "
                         "is it a video file ffmpeg reads?") from None


def _shrink(frame: np.ndarray, long_side: int) -> np.ndarray:
    from PIL import Image

    h, w = frame.shape[:2]
    if max(h, w) <= long_side:
        return frame
    s = long_side / max(h, w)
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)


def write_mp4(frames: Iterable[np.ndarray], path: Path, fps: float) -> None:
    """Encode (H, W, 3) uint8 frames as H.264 mp4 (yuv420p, so browsers play it), atomically;
    `frames` may be an iterator (a clip's are read back one at a time).

    yuv420p needs even sides: an odd last row or column is repeated."""
    import itertools

    import av

    rest = iter(frames)
    first = next(rest)
    frames = itertools.chain([first], rest)
    h, w = first.shape[:2]
    pad = ((0, h % 2), (0, w % 2), (0, 0))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
            stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
            stream.width, stream.height = w + w % 2, h + h % 2
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "18"}   # near-lossless: the video should not hide flicker
            for array in frames:
                frame = av.VideoFrame.from_ndarray(np.pad(array, pad, mode="edge"), format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except Exception as err:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise OutputError(f"cannot write the video {path}: {err}") from None

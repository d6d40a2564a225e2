"""How views show a clip: a strip of its frames (sheets, gallery) and its mp4 (gallery).

A clip job's output is `<clip>/<style>/<job_id>/<job_id>.mp4` with `frame_000001.png …` beside
it (docs/video.md). Views read those PNGs, never the video, so a sheet needs no PyAV; a clip's
content (a video or a frames folder) is shown by its first frame where one can be read.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

from ..errors import NSTError
from ..imaging import read_image, to_pil

STRIP_FRAMES = 4     # frames in a strip, evenly spaced from first to last


def is_clip_output(relative: str) -> bool:
    return relative.lower().endswith(".mp4")


def output_frames(video: Path) -> list[Path]:
    """The frames beside a clip job's mp4, in order."""
    return sorted(video.parent.glob("frame_*.png"))


def strip_frames(frames: list[Path], count: int = STRIP_FRAMES) -> list[Path]:
    """Up to `count` frames evenly spaced from the first to the last."""
    if len(frames) <= count:
        return frames
    return [frames[round(i * (len(frames) - 1) / (count - 1))] for i in range(count)]


def strip(video: Path, box: tuple[int, int], count: int = STRIP_FRAMES) -> Image.Image | None:
    """A strip of the clip's frames side by side, fitted into `box` (w, h); None if unreadable."""
    frames = strip_frames(output_frames(video), count)
    if not frames:
        return None
    try:
        images = [to_pil(read_image(f)) for f in frames]
    except NSTError:
        return None
    w, h = images[0].size
    gap = max(1, w // 32)
    sheet = Image.new("RGB", (len(images) * w + (len(images) - 1) * gap, h), (255, 255, 255))
    for i, image in enumerate(images):
        sheet.paste(image.resize((w, h)), (i * (w + gap), 0))
    return ImageOps.contain(sheet, box)


def first_frame(path: Path, box: tuple[int, int]) -> Image.Image | None:
    """A clip input's first frame (frames folder or video), fitted into `box`; None if unreadable."""
    try:
        if path.is_dir():
            from ..video import frame_files

            image = to_pil(read_image(frame_files(path)[0]))
        else:
            import av

            with av.open(str(path)) as container:
                frame = next(container.decode(video=0))
                image = frame.to_image().convert("RGB")
    except Exception:  # a missing extra, an unreadable input: the caller shows a placeholder
        return None
    return ImageOps.contain(image, box)

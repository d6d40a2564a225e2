"""`make run-video`: a short clip made from a scikit-image sample photo, stylized as a batch.

The clip is a camera pan: a 320 × 240 window slides 10 px per frame across scikit-image's
`coffee.png`, written as an H.264 mp4 to out/video_demo/inputs/coffee_pan.mp4 (the input
photo is only read). manifests/video_demo.yaml then runs it like any user manifest, once with
independent frames (`temporal_weight: 0`) and once with the default temporal loss, so the two
videos play side by side in out/video_demo/index.html (docs/video.md).
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np

FRAMES, STEP, WINDOW = 8, 10, (240, 320)     # frames, pixels per frame, (H, W)
STYLE = "ihc.png"


def pan(photo: np.ndarray, frames: int = FRAMES, step: int = STEP, window: tuple[int, int] = WINDOW) -> list[np.ndarray]:
    """`frames` windows of `photo` (H, W, 3), each `step` px right of the previous: a camera pan."""
    h, w = window
    top = (photo.shape[0] - h) // 2
    if photo.shape[1] < w + step * (frames - 1) or photo.shape[0] < h:
        raise ValueError(f"the photo is too small for {frames} frames of {w}×{h} panning {step} px")
    return [np.ascontiguousarray(photo[top:top + h, k * step:k * step + w, :3]) for k in range(frames)]


def materialize(root: Path) -> Path:
    """Write the demo clip and copy the style image into out/video_demo/inputs/; returns that folder."""
    try:
        import skimage.data
        from PIL import Image
    except ImportError:
        raise SystemExit("the demo needs scikit-image's sample images: pip install 'nst-batch[demo]'") from None
    from .video import missing_extra, write_mp4

    hint = missing_extra()
    if hint is not None:
        raise SystemExit(hint)
    data = Path(skimage.data.__file__).parent
    inputs = root / "out" / "video_demo" / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    clip = inputs / "coffee_pan.mp4"
    if not clip.exists():
        with Image.open(data / "coffee.png") as img:
            photo = np.asarray(img.convert("RGB"))
        write_mp4(pan(photo), clip, fps=12.0)
    style = inputs / STYLE
    if not style.exists():
        shutil.copyfile(data / STYLE, style)
    return inputs


def main() -> None:
    from .cli import main as cli_main

    root = Path.cwd()
    manifest = root / "manifests" / "video_demo.yaml"
    if not manifest.exists():
        raise SystemExit(f"{manifest} not found: run the demo from the nst-batch checkout (make run-video)")
    materialize(root)
    cli_main(["run", str(manifest), *sys.argv[1:]])


if __name__ == "__main__":
    main()

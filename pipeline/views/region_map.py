"""A region job's regions as the views show them: one line per region, a one-line summary, and
a small PNG of the region map (docs/regions.md; the records' `regions` field, run/records.py).

Torch-free: results.py (and with it `export` and `status`) labels styles with `region_summary`.
The thumbnail is keyed by the masks' paths, sizes and modification times, so repainting a mask
makes a new one on the next `gallery`; it is written only inside the output folder.
"""
from __future__ import annotations

import hashlib
import io
import os
import re
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import NSTError
from ..masks import parse_colour, read_mask

# Distinct colours for masks whose region names none (a label map's regions carry their own).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c",
           "#008080", "#9a6324")
UNCOVERED = (128, 128, 128)   # mid-grey: pixels no region covers
_SAFE = re.compile(r"[^A-Za-z0-9_-]+")


def _styles_text(region: Mapping[str, Any], join: str, weight_sep: str) -> str:
    styles = [s for s in region.get("styles") or [] if isinstance(s, Mapping)]
    if not styles:
        return "photo"       # `style: none`: the region keeps the photo
    if len(styles) == 1:
        return Path(str(styles[0].get("path", ""))).stem
    return join.join(f"{Path(str(s.get('path', ''))).stem}{weight_sep}{float(s.get('weight', 1.0)):g}"
                     for s in styles)


def region_lines(regions: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """One line per region: "sky: starry_night", "building: a 0.7 + b 0.3", "person: photo"."""
    return [f"{r.get('name')}: {_styles_text(r, ' + ', ' ')}" for r in regions or ()]


def region_summary(regions: Sequence[Mapping[str, Any]] | None) -> str:
    """All regions on one line: "sky=starry_night; building=a:0.7+b:0.3; person=photo"."""
    return "; ".join(f"{r.get('name')}={_styles_text(r, '+', ':')}" for r in regions or ())


def region_colours(regions: Sequence[Mapping[str, Any]] | None) -> list[str]:
    """Each region's colour as "#rrggbb": its own (a label map's legend), else the palette's next."""
    colours, spare = [], iter(PALETTE * (1 + len(regions or ()) // len(PALETTE)))
    for r in regions or ():
        own = parse_colour(r.get("colour"))
        colours.append("#%02x%02x%02x" % own if own else next(spare))
    return colours


def _sources(regions: Sequence[Mapping[str, Any]]) -> list[str]:
    return sorted({str(p) for r in regions for p in (r.get("mask"), r.get("labels")) if p})


def thumbnail_key(regions: Sequence[Mapping[str, Any]], size: int) -> str | None:
    """A short digest of what the picture depends on; None when a mask file is missing."""
    digest = hashlib.sha256(f"{size}\0{region_summary(regions)}\0{region_colours(regions)}".encode())
    for path in _sources(regions):
        try:
            st = os.stat(path)
        except OSError:
            return None
        digest.update(f"\0{path}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:12]


def render_region_map(regions: Sequence[Mapping[str, Any]], size: int) -> Image.Image | None:
    """The region map, long side `size`: a label map as painted (reduced with NEAREST, so no
    in-between colours), else every mask tinted in its region's colour, overlaps blended by
    weight, uncovered parts mid-grey. None when a mask is missing or unreadable."""
    label_files = {str(r["labels"]) for r in regions if r.get("labels")}
    try:
        if len(label_files) == 1 and not any(r.get("mask") for r in regions):
            with Image.open(next(iter(label_files))) as img:
                picture = img.convert("RGB")
            picture.thumbnail((size, size), Image.Resampling.NEAREST)
            return picture
        masked = [(r, c) for r, c in zip(regions, region_colours(regions))
                  if r.get("mask") or (r.get("labels") and parse_colour(r.get("colour")))]
        if not masked:
            return None
        first = _weights(masked[0][0], None)
        h, w = first.shape
        scale = min(1.0, size / max(h, w))
        shape = (max(1, round(h * scale)), max(1, round(w * scale)))
        weights = [_weights(r, shape) for r, _ in masked]
    except (NSTError, OSError, ValueError):
        return None
    colours = np.array([parse_colour(c) for _, c in masked], dtype=np.float32)      # (K, 3)
    stack = np.stack(weights).astype(np.float32)                                     # (K, H, W)
    total = stack.sum(axis=0)
    tint = np.einsum("khw,kc->hwc", stack, colours) / np.maximum(total, 1e-6)[..., None]
    cover = np.clip(total, 0, 1)[..., None]
    rgb = cover * tint + (1 - cover) * np.array(UNCOVERED, dtype=np.float32)
    return Image.fromarray(np.rint(rgb).clip(0, 255).astype(np.uint8), mode="RGB")


def _weights(region: Mapping[str, Any], shape: tuple[int, int] | None) -> np.ndarray:
    """A region's weights: its grey mask, or its colour's pixels of its label map (resized
    with NEAREST: a thumbnail needs no soft edges a label map does not have)."""
    if region.get("mask"):
        return read_mask(str(region["mask"]), shape)[0]
    with Image.open(str(region["labels"])) as img:
        rgb = img.convert("RGB")
    if shape is not None:
        rgb = rgb.resize((shape[1], shape[0]), Image.Resampling.NEAREST)
    return np.all(np.asarray(rgb) == np.array(parse_colour(region["colour"]), dtype=np.uint8), axis=-1).astype(np.float32)


def region_map_thumbnail(regions: Sequence[Mapping[str, Any]], dest: str | Path, size: int) -> Path | None:
    """Write the region map as a PNG at `dest` (temp file + os.replace); None when a mask is
    missing or unreadable (the gallery card then says "mask missing")."""
    picture = render_region_map(regions, size)
    if picture is None:
        return None
    # Imported here: pipeline.imaging loads torch, which results.py's users do not need.
    from ..imaging import atomic_write_bytes

    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    dest = Path(dest)
    atomic_write_bytes(dest, buffer.getvalue())
    return dest


def ensure_region_thumb(root: str | Path, job_id: str, regions: Sequence[Mapping[str, Any]] | None,
                        thumbs_dir: str, size: int) -> str | None:
    """The region map's path relative to `root` (`<thumbs_dir>/<job>.regions.<key>.png`), made
    when missing; older maps of the job are removed. None without regions or with a mask missing."""
    if not regions:
        return None
    key = thumbnail_key(regions, size)
    if key is None:
        return None
    stem = f"{_SAFE.sub('_', job_id)}.regions"
    relative = f"{thumbs_dir}/{stem}.{key}.png"
    folder = (Path(root) / thumbs_dir).resolve()
    if not folder.is_relative_to(Path(root).resolve()):
        return None       # a thumbnails folder linked elsewhere: write nothing outside the output
    if (folder / f"{stem}.{key}.png").is_file():
        return relative
    for old in _stale(folder, stem):
        old.unlink(missing_ok=True)
    return relative if region_map_thumbnail(regions, folder / f"{stem}.{key}.png", size) else None


def _stale(folder: Path, stem: str) -> Iterable[Path]:
    return folder.glob(f"{stem}.*.png") if folder.is_dir() else ()

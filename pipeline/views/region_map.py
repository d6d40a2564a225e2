"""A region job's regions as text (cards, sheets, export) and as a small map image (gallery).

A record's `regions` is None or a list of {"name", "mask", "labels", "colour", "styles":
[{"path", "weight", "mask"}], "style_weight", "content_weight"}; a region with no styles keeps
the photo. The map is the label map itself reduced, or each grey mask tinted in its own colour
(overlaps blended by weight, uncovered areas grey), cached in `<output>/.thumbs/` under a key
made of the masks' paths, sizes and mtimes, so a changed mask rebuilds it.
"""
from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from ..errors import NSTError, OutputError

# Distinct colours for masks that name none (a region's own "colour" wins).
PALETTE = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6", "#bcf60c")
UNCOVERED = (128, 128, 128)


def regions_of_row(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The regions of an index row or a record (JSON text or a list), [] without regions."""
    raw = row.get("regions")
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return []
    return [r for r in raw or [] if isinstance(r, dict)]


def _stem(path: Any) -> str:
    return Path(str(path or "")).stem


def region_style(region: Mapping[str, Any]) -> str:
    """ "starry_night", "a 0.7 + b 0.3" or "photo", with "(content ×2)" where it weighs more."""
    styles = [s for s in region.get("styles") or [] if isinstance(s, dict)]
    if not styles:
        text = "photo"
    elif len(styles) == 1:
        text = _stem(styles[0].get("path"))
    else:
        text = " + ".join(f"{_stem(s.get('path'))} {float(s.get('weight', 1.0)):g}" for s in styles)
    content = region.get("content_weight")
    if content not in (None, 1, 1.0):
        text += f" (content ×{float(content):g})"
    return text


def region_lines(regions: Sequence[Mapping[str, Any]]) -> list[str]:
    """One "name: style" line per region, as the gallery's cards show them."""
    return [f"{r.get('name')}: {region_style(r)}" for r in regions]


def region_label(regions: Sequence[Mapping[str, Any]]) -> str:
    """All regions on one line ("sky: starry_night · person: photo"): a sheet's style label."""
    return " · ".join(region_lines(regions))


def export_text(regions: Sequence[Mapping[str, Any]]) -> str:
    """The export's compact text: "sky=starry_night; building=a:0.7+b:0.3; person=none"."""
    parts = []
    for r in regions:
        styles = [s for s in r.get("styles") or [] if isinstance(s, dict)]
        if not styles:
            value = "none"
        elif len(styles) == 1:
            value = _stem(styles[0].get("path"))
        else:
            value = "+".join(f"{_stem(s.get('path'))}:{float(s.get('weight', 1.0)):g}" for s in styles)
        parts.append(f"{r.get('name')}={value}")
    return "; ".join(parts)


def _rgb(colour: Any, k: int) -> tuple[int, int, int]:
    text = colour if isinstance(colour, str) and len(colour) == 7 and colour.startswith("#") else PALETTE[k % len(PALETTE)]
    try:
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    except ValueError:
        text = PALETTE[k % len(PALETTE)]
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


def legend(regions: Sequence[Mapping[str, Any]]) -> list[tuple[str, str, str]]:
    """(name, "#rrggbb", style text) per region: the map's legend."""
    out = []
    for k, r in enumerate(regions):
        red, green, blue = _rgb(r.get("colour"), k)
        out.append((str(r.get("name")), f"#{red:02x}{green:02x}{blue:02x}", region_style(r)))
    return out


def render_map(regions: Sequence[Mapping[str, Any]], size: int) -> Image.Image | None:
    """The map at `size` px long side: a label map reduced, else the masks tinted; None when
    no mask can be read (the card shows the legend alone)."""
    labels = next((r.get("labels") for r in regions if r.get("labels")), None)
    if labels:
        try:
            with Image.open(labels) as img:
                pil = img.convert("RGB")
        except (OSError, ValueError):
            return None
        pil.thumbnail((size, size), Image.NEAREST)   # nearest: no colours that no region has
        return pil
    from ..masks import read_mask

    weights, colours = [], []
    shape = None
    for k, r in enumerate(regions):
        if not r.get("mask"):
            continue
        try:
            w, _ = read_mask(r["mask"], shape)
        except NSTError:
            continue
        shape = shape or w.shape
        weights.append(w)
        colours.append(_rgb(r.get("colour"), k))
    if not weights:
        return None
    stack = np.stack(weights)                                   # (R, H, W)
    total = stack.sum(axis=0)
    tint = np.tensordot(stack, np.asarray(colours, np.float32), axes=(0, 0))   # (H, W, 3)
    blended = tint / np.maximum(total, 1e-6)[..., None]         # overlaps: weighted mean colour
    cover = np.clip(total, 0, 1)[..., None]
    rgb = blended * cover + np.asarray(UNCOVERED, np.float32) * (1 - cover)
    pil = Image.fromarray(np.clip(rgb + 0.5, 0, 255).astype(np.uint8), "RGB")
    pil.thumbnail((size, size))
    return pil


def _key(regions: Sequence[Mapping[str, Any]], size: int) -> str:
    parts: list[str] = [str(size)]
    for r in regions:
        for path in (r.get("mask"), r.get("labels")):
            if path:
                try:
                    st = Path(path).stat()
                    parts.append(f"{path}:{st.st_size}:{st.st_mtime_ns}")
                except OSError:
                    parts.append(f"{path}:missing")
        parts.append(f"{r.get('name')}:{r.get('colour')}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def ensure_region_map(root: Path, thumbs_dir: str, safe_id: str, regions: Sequence[Mapping[str, Any]],
                      size: int) -> str | None:
    """The map's path relative to `root` (`<thumbs_dir>/<safe_id>.regions.<key>.png`), made
    when missing; the key changes with any mask's size or mtime, so an edited mask rebuilds it."""
    if not regions:
        return None
    relative = f"{thumbs_dir}/{safe_id}.regions.{_key(regions, size)}.png"
    path = root / relative
    if path.is_file():
        return relative
    pil = render_map(regions, size)
    if pil is None:
        return None
    buffer = io.BytesIO()
    pil.save(buffer, format="PNG")
    from ..imaging import atomic_write_bytes

    try:
        atomic_write_bytes(path, buffer.getvalue())
    except OSError as err:
        raise OutputError(f"cannot write {path}: {err.strerror or err}") from None
    for old in path.parent.glob(f"{safe_id}.regions.*.png"):   # the maps of older masks
        if old != path:
            old.unlink(missing_ok=True)
    return relative

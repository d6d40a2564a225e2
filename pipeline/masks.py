"""Region masks as weight maps (torch-free: validate and plan read them without torch).

A mask is any image Pillow reads; its grey level is the weight, 0–255 → 0–1 (soft masks and
feathered edges are weights, engine/guidance.py). A label map is one RGB image painted with
one colour per region, and a legend naming the colours. A mask whose aspect ratio matches the
image it belongs to but not its size is resized (the caller notes it); one whose aspect ratio
differs is an error, since stretching it would move the regions.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Mapping

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

ASPECT_TOLERANCE = 0.02   # relative: a 1000 × 667 mask for a 1500 × 1000 photo is the same shape
EMPTY_BELOW = 1e-3        # a mask whose mean weight is below this covers nothing


def _open(path: str | Path, mode: str) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"mask not found: {path}" if not path.exists() else f"mask is not a file: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                img = ImageOps.exif_transpose(img)
                if mode == "L" and img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
                    # A painted mask on a transparent layer: the alpha is the weight.
                    rgba = img.convert("RGBA")
                    alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
                    grey = np.asarray(rgba.convert("L"), dtype=np.float32)
                    return (alpha if alpha.min() < 255 else grey) if mode == "L" else np.asarray(rgba.convert("RGB"))
                return np.asarray(img.convert(mode))
    except (Image.DecompressionBombError, UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise InputError(f"cannot read mask {path}: {err}") from None


def aspect_problem(mask_shape: tuple[int, int], image_shape: tuple[int, int]) -> str | None:
    """Why a mask of (h, w) cannot be used on an image of (H, W), or None."""
    (mh, mw), (h, w) = mask_shape, image_shape
    ratio = (mw / mh) / (w / h)
    if abs(ratio - 1) > ASPECT_TOLERANCE:
        return (f"is {mw} × {mh} px, aspect {mw / mh:.3f}, but its image is {w} × {h} px, aspect {w / h:.3f}; "
                "draw the mask on the same frame (same aspect ratio)")
    return None


def _fit(weights: np.ndarray, path: str | Path, shape: tuple[int, int] | None) -> tuple[np.ndarray, bool]:
    if shape is None or tuple(weights.shape) == tuple(shape):
        return weights, False
    problem = aspect_problem(tuple(weights.shape), shape)
    if problem:
        raise InputError(f"mask {path} {problem}")
    img = Image.fromarray(weights.astype(np.float32), mode="F")
    return np.asarray(img.resize((shape[1], shape[0]), Image.Resampling.BILINEAR, reducing_gap=None),
                      dtype=np.float32).clip(0, 1), True


def read_mask(path: str | Path, shape: tuple[int, int] | None = None) -> tuple[np.ndarray, bool]:
    """(H, W) float32 weights in [0, 1] and whether they were resized to `shape` (H, W)."""
    weights = _open(path, "L").astype(np.float32) / 255.0
    return _fit(weights, path, shape)


def parse_colour(value: object) -> tuple[int, int, int] | None:
    """"#rrggbb", "rrggbb" or [r, g, b] (0–255) -> (r, g, b); None when it is neither."""
    if isinstance(value, str):
        text = value.strip().lstrip("#")
        if len(text) == 6:
            try:
                return tuple(int(text[i:i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]
            except ValueError:
                return None
        return None
    if isinstance(value, (list, tuple)) and len(value) == 3 and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value):
        return tuple(value)  # type: ignore[return-value]
    return None


def label_masks(path: str | Path, legend: Mapping[str, tuple[int, int, int]],
                shape: tuple[int, int] | None = None) -> tuple[dict[str, np.ndarray], bool]:
    """One mask per legend entry from a label map painted with exact colours, and whether they
    were resized. A colour in the map that the legend lacks is an error naming it and its share
    (antialiased painting makes such in-between colours: paint with a hard brush)."""
    rgb = _open(path, "RGB").astype(np.int32)
    codes = (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2]
    known = {(r << 16) | (g << 8) | b: name for name, (r, g, b) in legend.items()}
    values, counts = np.unique(codes, return_counts=True)
    stray = [(v, c) for v, c in zip(values.tolist(), counts.tolist()) if v not in known]
    if stray:
        v, c = max(stray, key=lambda vc: vc[1])
        raise InputError(f"label map {path}: colour #{v:06x} ({100 * c / codes.size:.2g} % of the pixels) is not in "
                         f"the legend ({', '.join(f'{n}: #{(r << 16) | (g << 8) | b:06x}' for n, (r, g, b) in legend.items())}); "
                         "add it to the legend or repaint those pixels")
    out, resized = {}, False
    for code, name in known.items():
        out[name], resized = _fit((codes == code).astype(np.float32), path, shape)
    return out, resized


def is_empty(weights: np.ndarray) -> bool:
    return float(weights.mean()) < EMPTY_BELOW

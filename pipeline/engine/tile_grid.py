"""Where the tiles of the exact tiled objective go (torch-free, so memory plans need no torch).

A convolution at a tile's edge reads zero padding instead of the neighbours, so a tile carries
a halo as wide as the corruption reaches at the deepest layer used, starts on the pooling grid
(every 2 × 2 window pools the same pixels as in the whole image), and only the positions of its
core count. engine/tiled.py evaluates the objective over these tiles.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .layers import LAYER_INDEX, LAYER_NAMES


def _stride(layer: str) -> int:
    """Input pixels per position at `layer`: 2 for each pooling layer up to and including it."""
    return 2 ** sum(1 for n in LAYER_NAMES[: LAYER_INDEX[layer] + 1] if n.startswith("pool"))


def edge_reach(layer: str) -> int:
    """How far (input px) a tile's edge corrupts the activations of `layer`.

    Each 3 × 3 convolution moves the corruption one position inwards; a 2 × 2 pooling keeps a
    position corrupt when either of its inputs is (ceil(r / 2) positions, twice as wide). For
    conv5_1 that is 5 positions of 16 px = 80 px, a little more than its receptive-field
    radius (156 px / 2 = 78 px) because a pooling window straddling the edge counts whole.
    """
    reach, stride = 0, 1
    for name in LAYER_NAMES[: LAYER_INDEX[layer] + 1]:
        if name.startswith("conv"):
            reach += 1
        elif name.startswith("pool"):
            reach, stride = -(-reach // 2), stride * 2
    return reach * stride


def grid(layers: Sequence[str]) -> int:
    """Tiles start on multiples of this (px), so every pooling window is the whole image's."""
    return _stride(max(layers, key=LAYER_INDEX.__getitem__))


def halo(layers: Sequence[str]) -> int:
    """The halo (px) each tile carries: the widest edge reach, rounded up to the grid."""
    step = grid(layers)
    reach = max(edge_reach(n) for n in layers)
    return -(-reach // step) * step


@dataclass(frozen=True)
class Tile:
    core: tuple[int, int, int, int]   # y0, y1, x0, x1 (px): the positions this tile accounts for
    crop: tuple[int, int, int, int]   # the pixels it reads: the core plus the halo, inside the image


def split(height: int, width: int, tile: int, layers: Sequence[str]) -> list[Tile]:
    """Cover an image with tiles of core `tile` px (rounded down to the grid, at least one cell)."""
    step, margin = grid(layers), halo(layers)
    tile = max(step, tile // step * step)
    out = []
    for y0 in range(0, height, tile):
        for x0 in range(0, width, tile):
            y1, x1 = min(height, y0 + tile), min(width, x0 + tile)
            crop = (max(0, y0 - margin), min(height, y1 + margin), max(0, x0 - margin), min(width, x1 + margin))
            out.append(Tile((y0, y1, x0, x1), crop))
    return out


def interior(tile: Tile, layer: str, full: tuple[int, int]) -> tuple[slice, slice, slice, slice]:
    """(rows, cols) of the tile's core at `layer`, in the tile's activations and in the whole image's."""
    s = _stride(layer)
    (y0, y1, x0, x1), (cy0, _, cx0, _) = tile.core, tile.crop
    # Cores start on the grid, so y0 / s is exact; a core that ends at the image edge ends where
    # the whole image's (floored) activation ends, which is y1 // s too.
    fy0, fx0, fy1, fx1 = y0 // s, x0 // s, y1 // s, x1 // s
    oy, ox = cy0 // s, cx0 // s
    return slice(fy0 - oy, fy1 - oy), slice(fx0 - ox, fx1 - ox), slice(fy0, fy1), slice(fx0, fx1)


def shape_at(layer: str, height: int, width: int) -> tuple[int, int]:
    s = _stride(layer)
    return height // s, width // s

"""Guidance channels: a region's mask at every layer's resolution (Gatys et al. 2017, §4.1).

The paper offers two ways to carry a mask down the network: "simple" guidance downsamples it
to each feature map's size, "inside" guidance erodes it so that only positions whose receptive
field lies wholly inside the region count. We use simple guidance, downsampled by the same
2 × 2 cells the network pools (average, so the mass is kept and a soft mask stays a weight):
- inside guidance empties small regions at deep layers (conv5_1's receptive field is 156 px
  wide, wider than a face at 512 px), leaving them without the coarse style statistics;
- with simple guidance, a soft or feathered edge gives soft weights at every layer, so the
  two sides' statistics blend across the edge instead of meeting at a seam.
Its cost, stated in docs/regions.md: deep positions near a boundary see both regions, so the
style bleeds across an edge by up to about half a receptive field.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from .layers import pools_before


def resize_mask(mask: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A (B, 1, h, w) weight map at (H, W): area-averaged down, bilinear up, kept in [0, 1]."""
    mask = mask.float() if mask.dtype not in (torch.float32, torch.float64) else mask
    if tuple(mask.shape[-2:]) == tuple(size):
        return mask
    down = size[0] <= mask.shape[-2] and size[1] <= mask.shape[-1]
    out = F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=down)
    return out.clamp_(0.0, 1.0)


def layer_guides(mask: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """(B, 1, H, W) at the image's size -> {layer: (B, 1, H / s, W / s)}, s the layer's stride.

    Each pooling floors like the network's (a 2 × 2 window, stride 2), so the guidance has
    exactly the feature map's shape at every layer and a tile's interior slices it like the
    features (engine/tiled.py)."""
    out: dict[str, torch.Tensor] = {}
    by_depth = sorted(set(layers), key=pools_before)
    current, depth = mask, 0
    for name in by_depth:
        while depth < pools_before(name):
            current = F.avg_pool2d(current, kernel_size=2, stride=2)
            depth += 1
        out[name] = current
    return out


def mass_fraction(mask: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) -> (B,): the share of the image a region covers (1 for the whole image)."""
    return mask.flatten(1).mean(1)


def mass_of(f: torch.Tensor, g: torch.Tensor | None) -> torch.Tensor:
    """Σ g over positions (B,) of features f (B, C, N) under guidance g (B, 1, N), or the
    position count when unguided: what a guided statistic is normalised by."""
    wide = f.dtype if f.dtype == torch.float64 else torch.float32
    if g is None:
        return torch.full((f.shape[0],), float(f.shape[-1]), dtype=wide, device=f.device)
    return (g if g.dtype == torch.float64 else g.float()).flatten(1).sum(1)

"""The sliced Wasserstein distance between two weighted sets of feature vectors (pure core).

Both the `sliced` style loss (Heitz et al., CVPR 2021) and the `style_distance` score use it.
Each projection maps the features to one dimension, where the Wasserstein-2 distance between
two distributions is the squared difference of their quantile functions. Sets of different
sizes and weighted positions (a region's soft guidance) are handled by quantile matching: each
output position, sorted, sits at the midpoint of its weighted cumulative share q ∈ (0, 1); its
target is the style's quantile function at q, linearly interpolated between the style's own
sorted midpoints. With equal sizes and equal weights the midpoints coincide and this is the
exact 1-D distance, the i-th smallest matched to the i-th smallest.
"""
from __future__ import annotations

import torch


def projections(channels: int, count: int, seed: int, device: torch.device | str = "cpu",
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """`count` random unit directions (C, P), drawn on the CPU from `seed`: the same everywhere."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    p = torch.randn(channels, count, generator=gen, dtype=torch.float64)
    return (p / p.norm(dim=0, keepdim=True)).to(device=device, dtype=dtype)


def _midpoints(w: torch.Tensor) -> torch.Tensor:
    """Weights (B, P, N) in sorted order -> cumulative-share midpoints in (0, 1)."""
    total = w.sum(-1, keepdim=True).clamp_min(1e-12)
    return (w.cumsum(-1) - 0.5 * w) / total


def _uniform(w: torch.Tensor | None) -> bool:
    return w is None or bool((w.amax(-1) - w.amin(-1) <= 1e-6 * w.amax(-1).abs()).all())


def quantile_targets(px: torch.Tensor, py: torch.Tensor, wx: torch.Tensor | None = None,
                     wy: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Sorted projections of x (B, P, N), their weights (None: uniform), and the matched style
    quantiles.

    px (B, P, N), py (B, P, M): projected features; wx (B, N), wy (B, M) ≥ 0 or None (uniform)."""
    b, p, n = px.shape
    m = py.shape[-1]
    sx, ix = px.sort(-1)
    sy, iy = py.sort(-1)
    if m == 1:   # one style position: every quantile is it
        return sx, (wx.unsqueeze(1).expand(b, p, n).gather(-1, ix) if wx is not None else None), sy.expand_as(sx)
    if wx is None and _uniform(wy):
        # Uniform weights on both sides (no region, one style): output rank i sits at (i + ½)/N,
        # style rank j at (j + ½)/M, whatever the projection, so i's target is the style's sorted
        # values at j = (i + ½)·M/N − ½, held constant past the ends: 1-D linear interpolation
        # with align_corners=False. The same values as the general path below, without its
        # (B, P, N) searchsorted and gathers, which cost 4× the sort at conv1_1.
        return sx, None, torch.nn.functional.interpolate(sy, size=n, mode="linear", align_corners=False)
    wxs = (wx.unsqueeze(1).expand(b, p, n).gather(-1, ix) if wx is not None
           else px.new_ones(b, p, n))
    wys = (wy.unsqueeze(1).expand(b, p, m).gather(-1, iy) if wy is not None
           else py.new_ones(b, p, m))
    qx, qy = _midpoints(wxs), _midpoints(wys).contiguous()
    hi = torch.searchsorted(qy, qx.contiguous()).clamp(1, m - 1)
    lo = hi - 1
    q0, q1 = qy.gather(-1, lo), qy.gather(-1, hi)
    y0, y1 = sy.gather(-1, lo), sy.gather(-1, hi)
    frac = ((qx - q0) / (q1 - q0).clamp_min(1e-12)).clamp(0.0, 1.0)
    return sx, wxs, y0 + frac * (y1 - y0)


def sliced_wasserstein(x: torch.Tensor, y: torch.Tensor, proj: torch.Tensor,
                       wx: torch.Tensor | None = None, wy: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over projections of the squared 1-D Wasserstein-2 distance: (B, N, C), (B, M, C) -> (B,).

    Differentiable in x (sorting is a permutation); the matched targets depend on y and the
    weights only."""
    # Projected as (P, C) @ (C, N), so each projection's values are contiguous: sorting a
    # transposed view is twice as slow on CPU.
    px = torch.matmul(proj.to(x).transpose(-1, -2), x.transpose(1, 2))   # (B, P, N)
    py = torch.matmul(proj.to(y).transpose(-1, -2), y.transpose(1, 2))   # (B, P, M)
    sx, w, target = quantile_targets(px, py, wx, wy)
    if w is None:
        per = (sx - target.detach()).pow(2).mean(-1)                                     # (B, P)
    else:
        per = ((sx - target.detach()).pow(2) * w).sum(-1) / w.sum(-1).clamp_min(1e-12)   # (B, P)
    return per.mean(-1)

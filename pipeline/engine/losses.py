"""Gram matrices and the three losses of Gatys et al., as tensors in, tensors out.

Every loss returns one value per image of the batch, shape (B,), so a batch of independent
jobs can share one forward pass and still be judged one by one.

Normalization (where this departs from the paper, and why):
- Gram: G = F Fᵀ / (H·W), the paper's G divided by the number of positions M. The paper's
  E_l = 1/(4 N² M²) Σ (G − A)² is then exactly ¼ · mean((Ĝ − Â)²).
- Style layer loss: mean((Ĝ − Â)²) / mean(Â²). Dividing by the target's own mean square makes
  each layer's term a relative error, so the five layers weigh what their per-layer weights
  say instead of what their activation scales happen to be (raw conv1_1 terms are ~10⁶ × conv5_1's),
  and the same style_weight means the same thing for every weights source and image size.
- Content loss: mean((F − P)²) / mean(P²), relative for the same reason (the paper: ½ Σ (F − P)²).
  Regions kept as photo weigh their positions more (`weighted_content_loss`).
- Total variation: mean of squared neighbour differences in [0, 1] RGB.
- Temporal (clips, Ruder et al. 2016): mean over all pixels of c · (x − ω)², with ω the previous
  result warped onto this frame and c the flow's reliability mask; the paper's 1/D Σ c (x − ω)².
"""
from __future__ import annotations

import torch

_EPS = 1e-8


def widen(t: torch.Tensor) -> torch.Tensor:
    """At least fp32 for sums over many positions (float64 stays float64, for exactness checks)."""
    return t if t.dtype == torch.float64 else t.float()


def gram(features: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, C) Gram matrix over positions, divided by H·W, in fp32."""
    b, c, h, w = features.shape
    flat = widen(features.reshape(b, c, h * w))
    # Autocast would run this bmm in bf16 again (it casts matmul inputs down): a Gram sums H·W
    # products, and bf16's 8-bit mantissa would blur the style targets and the loss.
    with torch.autocast(features.device.type, enabled=False):
        return torch.bmm(flat, flat.transpose(1, 2)) / (h * w)


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative MSE per image: (B, C, H, W) vs (B or 1, C, H, W) -> (B,)."""
    diff = (widen(features) - widen(target)).pow(2).flatten(1).mean(1)
    energy = widen(target).pow(2).flatten(1).mean(1)
    return diff / (energy + _EPS)


def weighted_content_loss(features: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """`content_loss` with a weight per position: (B, C, H, W), (B or 1, C, H, W), (B, 1, H, W) -> (B,).

    The normaliser stays the target's unweighted energy, so a map of ones is `content_loss`."""
    diff = ((widen(features) - widen(target)).pow(2) * weights).flatten(1).mean(1)
    energy = widen(target).pow(2).flatten(1).mean(1)
    return diff / (energy + _EPS)


def style_layer_loss(g: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Relative MSE between Gram matrices: (B, C, C) vs (B or 1, C, C) -> (B,)."""
    diff = (g - target).pow(2).flatten(1).mean(1)
    energy = target.pow(2).flatten(1).mean(1)
    return diff / (energy + _EPS)


def tv_loss(images: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between horizontal and vertical neighbours: (B, 3, H, W) -> (B,)."""
    dx = (images[..., :, 1:] - images[..., :, :-1]).pow(2).flatten(1).mean(1)
    dy = (images[..., 1:, :] - images[..., :-1, :]).pow(2).flatten(1).mean(1)
    return dx + dy


def temporal_loss(images: torch.Tensor, warped: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Masked MSE to the warped previous frame: (B, 3, H, W), (B, 3, H, W), (B, 1, H, W) -> (B,)."""
    return ((images.float() - warped.float()).pow(2) * mask).flatten(1).sum(1) / images[0].numel()


def blend_grams(grams: list[dict[str, torch.Tensor]], weights: list[float]) -> dict[str, torch.Tensor]:
    """Blend several styles' Gram targets, layer by layer, with weights normalized to sum 1."""
    total = float(sum(weights))
    if not grams or len(grams) != len(weights) or min(weights) < 0 or not total > 0:
        # Callers validate user input; this guards the core against a silent division by zero.
        raise ValueError(f"blend_grams needs one weight ≥ 0 per style with a positive sum, got {weights}")
    out = {}
    for layer in grams[0]:
        out[layer] = sum(w / total * g[layer] for g, w in zip(grams, weights))
    return out

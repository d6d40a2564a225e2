"""The Gatys objective evaluated tile by tile, exactly: any image size in bounded memory.

Every term of the loss is a sum over positions: the content term directly, the style term
through Gram matrices, which are sums over positions too. So one evaluation can run in tiles
and still give the whole image's loss and gradient (peers that stitch independently
optimized tiles change the objective instead, and the style drifts from tile to tile):

- pass 1, no autograd: the network runs tile by tile; each style layer's Gram matrix of the
  whole image is the sum of the tiles' interior contributions. The style loss and its
  gradient D = ∂L/∂G with respect to the whole-image Grams follow (both small, C × C);
- pass 2, tile by tile with autograd: the surrogate Σ_l ⟨D_l, G_l(tile interior)⟩ plus the
  tile's content term has, with respect to the tile's pixels, exactly the tile's share of the
  full gradient (G is linear in the tiles' contributions); the shares are added up.

Why this is exact: a tile carries a halo wide enough that no position of its interior sees the
tile's edge (where the convolutions pad with zeros instead of reading the neighbours), and
tiles start on the pooling grid so every 2 × 2 window pools the same pixels as in the whole
image. Total variation is a pixel-space term: it is computed on the whole image at once.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Mapping, Sequence

import torch

from . import losses
from .losses import widen
from .features import VGGFeatures
from .tile_grid import Tile, edge_reach, grid, halo, interior as _interior, shape_at as _shape_at, split
from .objective import Objective, StyleTargets
from ..params import Params

_EPS = 1e-8
__all__ = ["TiledObjective", "make_objective", "tiled_features", "tiled_grams", "Tile", "edge_reach", "grid",
           "halo", "split"]


def tiled_features(feats: VGGFeatures, images: torch.Tensor, layers: Sequence[str], tile: int,
                   autocast: ContextManager | None = None) -> dict[str, torch.Tensor]:
    """The whole image's activations at `layers`, computed tile by tile without autograd."""
    b, _, h, w = images.shape
    out: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for t in split(h, w, tile, layers):
            cy0, cy1, cx0, cx1 = t.crop
            with autocast or nullcontext():
                acts = feats(images[..., cy0:cy1, cx0:cx1], list(layers))
            for name in layers:
                a = acts[name]
                if name not in out:
                    out[name] = a.new_zeros((b, a.shape[1], *_shape_at(name, h, w)))
                ty, tx, fy, fx = _interior(t, name, (h, w))
                out[name][..., fy, fx] = a[..., ty, tx]
    return out


class TiledObjective(Objective):
    """`Objective` with the same value and gradient, evaluated in tiles of `tile` px (core)."""

    def __init__(self, feats: VGGFeatures, content_targets: Mapping[str, torch.Tensor],
                 style_targets: Sequence[StyleTargets] | StyleTargets, params: Sequence[Params] | Params,
                 tile: int, temporal: tuple[torch.Tensor, torch.Tensor] | None = None):
        super().__init__(feats, content_targets, style_targets, params, temporal)
        self.tile = tile
        self.content_energy = {n: widen(t).pow(2).flatten(1).mean(1) + _EPS for n, t in self.content_targets.items()}

    def keep(self, index: torch.Tensor) -> "TiledObjective":
        out = super().keep(index)
        out.content_energy = {k: v[index] for k, v in self.content_energy.items()}
        return out

    def _content_sum(self, acts: Mapping[str, torch.Tensor], t: Tile, full: tuple[int, int]) -> torch.Tensor:
        """This tile's share of the (unweighted, layer-averaged) content loss, per job (B,)."""
        total = 0.0
        for n in self.content_layers:
            ty, tx, fy, fx = _interior(t, n, full)
            f = widen(acts[n][..., ty, tx])
            target = widen(self.content_targets[n][..., fy, fx])
            positions = _shape_at(n, *full)
            denom = f.shape[1] * positions[0] * positions[1] * self.content_energy[n]
            total = total + (f - target).pow(2).flatten(1).sum(1) / denom
        return total / len(self.content_layers)

    def _pass1(self, images: torch.Tensor, autocast: ContextManager | None):
        """Whole-image Grams (B, C, C) per style layer and the content loss (B,), no autograd."""
        b, _, h, w = images.shape
        grams: dict[str, torch.Tensor] = {}
        content = images.new_zeros(b, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
        with torch.no_grad():
            for t in split(h, w, self.tile, self.layers):
                cy0, cy1, cx0, cx1 = t.crop
                with autocast or nullcontext():
                    acts = self.feats(images[..., cy0:cy1, cx0:cx1], self.layers)
                for n in self.style_layers:
                    ty, tx, _, _ = _interior(t, n, (h, w))
                    f = widen(acts[n][..., ty, tx]).flatten(2)
                    g = torch.bmm(f, f.transpose(1, 2))
                    grams[n] = grams[n] + g if n in grams else g
                content = content + self._content_sum(acts, t, (h, w))
        for n in self.style_layers:
            fh, fw = _shape_at(n, h, w)
            grams[n] = grams[n] / (fh * fw)
        return grams, content

    def _style(self, grams: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return sum(self.layer_weights[:, i] * losses.style_layer_loss(grams[n], self.style_targets[n])
                   for i, n in enumerate(self.style_layers))

    def _finish(self, images: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
                grad: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {"content": content, "style": style}
        total = self.content_weight * content + self.style_weight * style
        # Pixel-space terms (TV, a clip's temporal term) see the whole image at once: exact.
        pixel_terms = [("tv", self.tv_weight, lambda x: losses.tv_loss(widen(x)))] if self.use_tv else []
        if self.temporal is not None:
            pixel_terms.append(("temporal", self.temporal_weight,
                                lambda x: losses.temporal_loss(x.float(), *self.temporal)))
        for name, weight, term in pixel_terms:
            x = images.detach().requires_grad_(grad is not None)
            with torch.enable_grad() if grad is not None else nullcontext():
                value = term(x)
                if grad is not None:
                    (weight * value).sum().backward()
                    grad += x.grad
            parts[name] = value.detach()
            total = total + weight * parts[name]
        parts["total"] = total
        return total, parts

    def __call__(self, images: torch.Tensor, autocast: ContextManager | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Loss (B,) and its parts of images (B, 3, H, W), without autograd."""
        grams, content = self._pass1(images, autocast)
        return self._finish(images, content, self._style(grams), None)

    def value_and_grad(self, images: torch.Tensor, autocast: ContextManager | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Loss (B,), its parts, and the gradient of the summed loss w.r.t. images (B, 3, H, W)."""
        b, _, h, w = images.shape
        grams, content = self._pass1(images, autocast)
        # D_l = ∂(Σ_b style_weight_b · style_b)/∂G_l: the whole image's, fixed for pass 2.
        leaves = {n: g.detach().requires_grad_(True) for n, g in grams.items()}
        with torch.enable_grad():
            style = self._style(leaves)
            d = torch.autograd.grad((self.style_weight * style).sum(), list(leaves.values()))
        slope = {n: g / (fh * fw) for (n, g), (fh, fw) in
                 zip(zip(leaves, d), (_shape_at(n, h, w) for n in leaves))}
        grad = torch.zeros_like(images, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
        for t in split(h, w, self.tile, self.layers):
            cy0, cy1, cx0, cx1 = t.crop
            crop = images[..., cy0:cy1, cx0:cx1].detach().requires_grad_(True)
            with torch.enable_grad():
                with autocast or nullcontext():
                    acts = self.feats(crop, self.layers)
                surrogate = (self.content_weight * self._content_sum(acts, t, (h, w))).sum()
                for n in self.style_layers:
                    ty, tx, _, _ = _interior(t, n, (h, w))
                    f = widen(acts[n][..., ty, tx]).flatten(2)
                    surrogate = surrogate + (slope[n] * torch.bmm(f, f.transpose(1, 2))).sum()
                surrogate.backward()
            grad[..., cy0:cy1, cx0:cx1] += crop.grad
        total, parts = self._finish(images, content, style.detach(), grad)
        return total, parts, grad


def make_objective(feats: VGGFeatures, content: torch.Tensor, style_targets: Sequence[StyleTargets],
                   params: Sequence[Params], tile: int | None, autocast: ContextManager | None = None,
                   temporal: tuple[torch.Tensor, torch.Tensor] | None = None) -> Objective:
    """The objective of a stage: whole-image when `tile` is None, else tiled with that core size.

    The content targets are computed the same way (tile by tile when tiled), so the network
    never sees more than one tile at once."""
    layers = list(params[0].content_layers)
    if tile is None:
        with torch.no_grad(), autocast or nullcontext():
            targets = feats(content, layers)
        return Objective(feats, targets, style_targets, params, temporal)
    targets = tiled_features(feats, content, layers, tile, autocast)
    return TiledObjective(feats, targets, style_targets, params, tile, temporal)


def tiled_grams(feats: VGGFeatures, images: torch.Tensor, layers: Sequence[str], tile: int
                ) -> dict[str, torch.Tensor]:
    """`objective.style_grams` of a (large) style image, computed tile by tile: (1, C, C) per layer."""
    _, _, h, w = images.shape
    sums: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for t in split(h, w, tile, layers):
            cy0, cy1, cx0, cx1 = t.crop
            acts = feats(images[..., cy0:cy1, cx0:cx1], list(layers))
            for n in layers:
                ty, tx, _, _ = _interior(t, n, (h, w))
                f = widen(acts[n][..., ty, tx]).flatten(2)
                g = torch.bmm(f, f.transpose(1, 2))
                sums[n] = sums[n] + g if n in sums else g
    return {n: g / (_shape_at(n, h, w)[0] * _shape_at(n, h, w)[1]) for n, g in sums.items()}

"""The Gatys objective evaluated tile by tile, exactly: any image size in bounded memory.

Every term of the loss is a sum over positions: the content term directly, the style term
through Gram matrices (guided or not: engine/guidance.py), which are sums over positions too. So one evaluation can run in tiles
and still give the whole image's loss and gradient (peers that stitch independently
optimized tiles change the objective instead, and the style drifts from tile to tile):

- pass 1, no autograd: the network runs tile by tile; each style layer's moments of the whole
  image (the unnormalised Gram Σ g f fᵀ, and whatever else the loss kind sums: style_loss.py)
  are the sums of the tiles' interior contributions. The style loss and its gradient
  D = ∂L/∂M with respect to the whole-image moments follow (both small, C × C);
- pass 2, tile by tile with autograd: the surrogate Σ_l ⟨D_l, M_l(tile interior)⟩ plus the
  tile's content term has, with respect to the tile's pixels, exactly the tile's share of the
  full gradient (M is linear in the tiles' contributions); the shares are added up.

Why this is exact: a tile carries a halo wide enough that no position of its interior sees the
tile's edge (where the convolutions pad with zeros instead of reading the neighbours), and
tiles start on the pooling grid so every 2 × 2 window pools the same pixels as in the whole
image. Total variation is a pixel-space term: it is computed on the whole image at once.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Mapping, Sequence

import torch

from . import losses, style_loss
from .losses import widen
from .features import VGGFeatures
from .guidance import layer_guides
from .tile_grid import Tile, edge_reach, grid, halo, interior as _interior, shape_at as _shape_at, split
from .objective import JobStyle, Objective, StyleTargets
from ..errors import ParamError
from ..params import Params

_EPS = 1e-8
__all__ = ["TiledObjective", "make_objective", "tiled_features", "tiled_grams", "tiled_targets", "Tile", "edge_reach", "grid",
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
    """`Objective` with the same value and gradient, evaluated in tiles of `tile` px (core).

    Every style term is a function of weighted sums over positions (`moments`: a Gram's
    Σ g f fᵀ, and whatever else the loss kind sums); a region's guidance is sliced like the
    features, so guided and plain terms tile alike. A loss kind that is not such a function
    (a sort over all positions) is refused here rather than approximated."""

    def __init__(self, feats: VGGFeatures, content_targets: Mapping[str, torch.Tensor],
                 style_targets: Sequence[JobStyle] | StyleTargets, params: Sequence[Params] | Params,
                 tile: int, temporal: tuple[torch.Tensor, torch.Tensor] | None = None,
                 content_weight_maps: Sequence[torch.Tensor | None] | None = None,
                 photo: tuple[torch.Tensor, Sequence[torch.Tensor | None]] | None = None):
        super().__init__(feats, content_targets, style_targets, params, temporal, content_weight_maps, photo)
        if not self.kind.tileable:
            raise ParamError(f"style_loss {self.kind.name} cannot run in tiles ({self.kind.untileable}); "
                             "lower size, raise --memory-limit, or use style_loss gram or meancov")
        self.tile = tile
        self.content_energy = {n: widen(t).pow(2).flatten(1).mean(1) + _EPS for n, t in self.content_targets.items()}

    def keep(self, index: torch.Tensor) -> "TiledObjective":
        out = super().keep(index)
        out.content_energy = {k: v[index] for k, v in self.content_energy.items()}
        return out

    def _content_sum(self, acts: Mapping[str, torch.Tensor], t: Tile, full: tuple[int, int], at: dict
                     ) -> torch.Tensor:
        """This tile's share of the (unweighted, layer-averaged) content loss, per job (B,)."""
        total = 0.0
        for n in self.content_layers:
            ty, tx, fy, fx = _interior(t, n, full)
            f = widen(acts[n][..., ty, tx])
            target = widen(self.content_targets[n][..., fy, fx])
            positions = _shape_at(n, *full)
            denom = f.shape[1] * positions[0] * positions[1] * self.content_energy[n]
            err = (f - target).pow(2)
            if at["content"] is not None:
                err = err * at["content"][n][..., fy, fx]
            total = total + err.flatten(1).sum(1) / denom
        return total / len(self.content_layers)

    def _tile_moments(self, acts: Mapping[str, torch.Tensor], t: Tile, full: tuple[int, int], at: dict
                      ) -> list[dict[str, dict[str, torch.Tensor]]]:
        """Per slot and style layer, the loss kind's sums over this tile's interior positions."""
        out = []
        for k in range(len(self.slot_targets)):
            guides = at["guides"][k]
            per_layer = {}
            for n in self.style_layers:
                ty, tx, fy, fx = _interior(t, n, full)
                f = acts[n][..., ty, tx].flatten(2)
                g = guides[n][..., fy, fx].flatten(2) if guides is not None else None
                per_layer[n] = self.kind.moments(f, g)
            out.append(per_layer)
        return out

    def _pass1(self, images: torch.Tensor, autocast: ContextManager | None):
        """Whole-image moments per slot and style layer, and the content loss (B,), no autograd."""
        b, _, h, w = images.shape
        at = self.at_size(h, w)
        sums: list[dict[str, dict[str, torch.Tensor]]] | None = None
        content = images.new_zeros(b, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
        with torch.no_grad():
            for t in split(h, w, self.tile, self.layers):
                cy0, cy1, cx0, cx1 = t.crop
                with autocast or nullcontext():
                    acts = self.feats(images[..., cy0:cy1, cx0:cx1], self.layers)
                moments = self._tile_moments(acts, t, (h, w), at)
                if sums is None:
                    sums = moments
                else:
                    for k, per_layer in enumerate(moments):
                        for n, parts in per_layer.items():
                            for p, v in parts.items():
                                sums[k][n][p] = sums[k][n][p] + v
                content = content + self._content_sum(acts, t, (h, w), at)
        return sums, content, at

    def _style(self, sums: list[dict[str, dict[str, torch.Tensor]]], at: dict, full: tuple[int, int]
               ) -> torch.Tensor:
        total = 0.0
        for k, slot in enumerate(self.slot_targets):
            layered = 0.0
            for i, n in enumerate(self.style_layers):
                mass = at["masses"][k][n]
                if mass is None:
                    fh, fw = _shape_at(n, *full)
                    mass = torch.full((self.style_weight.shape[0],), float(fh * fw), device=self.device)
                layered = layered + self.layer_weights[:, i] * self.kind.from_moments(sums[k][n], mass, slot[n])
            total = total + at["weights"][k] * layered
        return total

    def _finish(self, images: torch.Tensor, content: torch.Tensor, style: torch.Tensor,
                grad: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        parts = {"content": content, "style": style}
        total = self.content_weight * content + self.style_weight * style
        # Pixel-space terms (TV, a clip's temporal term) see the whole image at once: exact.
        pixel_terms = [("tv", self.tv_weight, lambda x: losses.tv_loss(widen(x)))] if self.use_tv else []
        if self.temporal is not None:
            pixel_terms.append(("temporal", self.temporal_weight,
                                lambda x: losses.temporal_loss(x.float(), *self.temporal)))
        if self.photo is not None:
            at = self.at_size(*images.shape[-2:])
            pixel_terms.append(("photo", self.photo_weight, lambda x: self.photo_term(x, at)))
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
        sums, content, at = self._pass1(images, autocast)
        return self._finish(images, content, self._style(sums, at, tuple(images.shape[-2:])), None)

    def value_and_grad(self, images: torch.Tensor, autocast: ContextManager | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Loss (B,), its parts, and the gradient of the summed loss w.r.t. images (B, 3, H, W)."""
        b, _, h, w = images.shape
        sums, content, at = self._pass1(images, autocast)
        # D = ∂(Σ_b style_weight_b · style_b)/∂(each summed moment): the whole image's, fixed
        # for pass 2, where each tile's moments are linear in its positions' contributions.
        leaves = [{n: {p: v.detach().requires_grad_(True) for p, v in parts.items()} for n, parts in per.items()}
                  for per in sums]
        flat = [v for per in leaves for parts in per.values() for v in parts.values()]
        with torch.enable_grad():
            style = self._style(leaves, at, (h, w))
            d = torch.autograd.grad((self.style_weight * style).sum(), flat, allow_unused=True)
        slopes = iter(d)
        slope = [{n: {p: next(slopes) for p in parts} for n, parts in per.items()} for per in leaves]
        grad = torch.zeros_like(images, dtype=torch.float64 if images.dtype == torch.float64 else torch.float32)
        for t in split(h, w, self.tile, self.layers):
            cy0, cy1, cx0, cx1 = t.crop
            crop = images[..., cy0:cy1, cx0:cx1].detach().requires_grad_(True)
            with torch.enable_grad():
                with autocast or nullcontext():
                    acts = self.feats(crop, self.layers)
                surrogate = (self.content_weight * self._content_sum(acts, t, (h, w), at)).sum()
                for k, per_layer in enumerate(self._tile_moments(acts, t, (h, w), at)):
                    for n, parts in per_layer.items():
                        for p, v in parts.items():
                            if slope[k][n][p] is not None:
                                surrogate = surrogate + (slope[k][n][p] * v).sum()
                surrogate.backward()
            grad[..., cy0:cy1, cx0:cx1] += crop.grad
        total, parts = self._finish(images, content, style.detach(), grad)
        return total, parts, grad


def make_objective(feats: VGGFeatures, content: torch.Tensor, style_targets: Sequence[JobStyle],
                   params: Sequence[Params], tile: int | None, autocast: ContextManager | None = None,
                   temporal: tuple[torch.Tensor, torch.Tensor] | None = None,
                   content_weight_maps: Sequence[torch.Tensor | None] | None = None,
                   photo_maps: Sequence[torch.Tensor | None] | None = None) -> Objective:
    """The objective of a stage: whole-image when `tile` is None, else tiled with that core size.

    The content targets are computed the same way (tile by tile when tiled), so the network
    never sees more than one tile at once."""
    layers = list(params[0].content_layers)
    photo = (content, photo_maps) if photo_maps is not None else None
    if tile is None:
        with torch.no_grad(), autocast or nullcontext():
            targets = feats(content, layers)
        return Objective(feats, targets, style_targets, params, temporal, content_weight_maps, photo)
    targets = tiled_features(feats, content, layers, tile, autocast)
    return TiledObjective(feats, targets, style_targets, params, tile, temporal, content_weight_maps, photo)


def tiled_targets(feats: VGGFeatures, images: torch.Tensor, layers: Sequence[str], tile: int,
                  loss: str = "gram", mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """`style_loss.style_targets` of a (large) style image, computed tile by tile (same values)."""
    _, _, h, w = images.shape
    kind = style_loss.get(loss)
    if not kind.tileable:
        raise ParamError(f"style_loss {kind.name} cannot run in tiles ({kind.untileable}); "
                         "lower style_scale or size, or raise --memory-limit")
    guides = layer_guides(mask, layers) if mask is not None else {}
    sums: dict[str, dict[str, torch.Tensor]] = {}
    with torch.no_grad():
        for t in split(h, w, tile, layers):
            cy0, cy1, cx0, cx1 = t.crop
            acts = feats(images[..., cy0:cy1, cx0:cx1], list(layers))
            for n in layers:
                ty, tx, fy, fx = _interior(t, n, (h, w))
                f = acts[n][..., ty, tx].flatten(2)
                g = guides[n][..., fy, fx].flatten(2) if n in guides else None
                m = kind.moments(f, g)
                sums[n] = {p: sums[n][p] + v for p, v in m.items()} if n in sums else m
    out = {}
    for n in layers:
        fh, fw = _shape_at(n, h, w)
        mass = (widen(guides[n]).flatten(1).sum(1) if n in guides
                else torch.full((1,), float(fh * fw), device=images.device))
        for part, value in kind.target_from_moments(sums[n], mass).items():
            out[n + ("." + part if part else "")] = value
    return out


def tiled_grams(feats: VGGFeatures, images: torch.Tensor, layers: Sequence[str], tile: int
                ) -> dict[str, torch.Tensor]:
    """`objective.style_grams` of a (large) style image, computed tile by tile: (1, C, C) per layer."""
    return tiled_targets(feats, images, layers, tile, "gram")

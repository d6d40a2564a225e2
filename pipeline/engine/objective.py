"""The objective of a batch of jobs: content + style + TV (+ temporal) loss, each job with its own targets.

Per-job weights are (B,) tensors and per-job style targets are stacked (B, ...), so jobs that
differ in weights, style, regions or content still share one forward and backward pass. Under
autocast the network runs in bf16; Gram matrices and losses are always fp32 (losses.py).

A job's style is its regions (style_loss.StyleRegion): the k-th regions of all jobs form one
"slot", evaluated together; a job with fewer regions has a zero-weight slot there. Each
region's term is weighted by its weight × the share of the image its mask covers, so a region
covering everything is exactly the plain objective, and two complementary halves style every
pixel as strongly as one style over the whole image does.
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Mapping, Sequence

import torch

from . import losses, style_loss
from .features import VGGFeatures
from .guidance import layer_guides, mass_fraction, resize_mask
from .style_loss import StyleRegion, layer_parts, widen
from ..params import PHOTO_WEIGHT, Params

StyleTargets = Mapping[str, torch.Tensor]          # "<layer>[.<part>]" -> target (1, ...); a Gram (1, C, C)
JobStyle = StyleTargets | Sequence[StyleRegion]    # one job's style: its targets, or its regions
_EPS = 1e-8


def as_regions(style: JobStyle) -> list[StyleRegion]:
    """A job's style as regions: plain targets are one region covering the image."""
    if isinstance(style, Mapping):
        return [StyleRegion(style)]
    return list(style)


class Objective:
    """Weighted losses of images (B, 3, H, W) against fixed per-job targets."""

    def __init__(self, feats: VGGFeatures, content_targets: Mapping[str, torch.Tensor],
                 style_targets: Sequence[JobStyle] | StyleTargets, params: Sequence[Params] | Params,
                 temporal: tuple[torch.Tensor, torch.Tensor] | None = None,
                 content_weight_maps: Sequence[torch.Tensor | None] | None = None,
                 photo: tuple[torch.Tensor, Sequence[torch.Tensor | None]] | None = None):
        params = [params] if isinstance(params, Params) else list(params)
        if isinstance(style_targets, Mapping):
            style_targets = [style_targets]
        first = params[0]
        self.feats = feats
        self.kind = style_loss.for_jobs(first.style_loss, params)
        self.content_layers, self.style_layers = first.content_layers, first.style_layers
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        device = next(iter(content_targets.values())).device
        self.device = device
        self.content_targets = {k: v.detach() for k, v in content_targets.items()}
        self._build_slots([as_regions(s) for s in style_targets], device)

        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device)

        self.content_weight = column([p.content_weight for p in params])
        self.style_weight = column([p.style_weight for p in params])
        self.tv_weight = column([p.tv_weight for p in params])
        self.use_tv = any(p.tv_weight > 0 for p in params)
        # Clips: (warped previous result (B, 3, H, W), reliability mask (B, 1, H, W)); engine/flow.py.
        self.temporal = temporal
        self.temporal_weight = column([p.temporal_weight for p in params])
        layer_weights = []
        for p in params:
            w = p.style_layer_weights or (1.0,) * len(p.style_layers)
            layer_weights.append([v / sum(w) for v in w])
        self.layer_weights = torch.tensor(layer_weights, dtype=torch.float32, device=device)  # (B, L)
        # Per job: a weight map (1, 1, h, w) ≥ 0 on the content term (regions kept as photo
        # weigh more), None: uniform.
        maps = list(content_weight_maps) if content_weight_maps is not None else []
        self.content_maps = maps if any(m is not None for m in maps) else None
        # Regions kept as photo ("style: none"): (the content images (B, 3, H, W) at this stage,
        # per job None or a (1, 1, h, w) map): a pixel-space pull towards the photo there, like a
        # clip's temporal term, so the region keeps its colours (conv4_2 alone does not hold them,
        # and the styled neighbours' deep-layer gradients reach into it). Weight PHOTO_WEIGHT ×
        # the job's content weight; the map carries the region's own content_weight factor.
        self.photo = None
        if photo is not None and any(m is not None for m in photo[1]):
            self.photo = (photo[0].detach(), list(photo[1]))
        self.photo_weight = self.content_weight * PHOTO_WEIGHT
        self._at: dict = {}          # per image size: guidance, masses, weights (built on first use)

    def _build_slots(self, regions: list[list[StyleRegion]], device: torch.device) -> None:
        count = max(len(r) for r in regions)
        self.slot_masks: list[list[torch.Tensor | None]] = []    # [slot][job]
        self.slot_region_weight: list[torch.Tensor] = []           # [slot] (B,)
        self.slot_targets: list[dict[str, dict[str, torch.Tensor]]] = []   # [slot][layer][part] (B, ...)
        for k in range(count):
            chosen, masks, weights = [], [], []
            for job in regions:
                if k < len(job):
                    chosen.append(job[k])
                    weights.append(job[k].weight)
                else:   # padding: any valid targets, weight 0
                    chosen.append(job[0])
                    weights.append(0.0)
                masks.append(chosen[-1].mask if k < len(job) else None)
            self.slot_masks.append(masks)
            self.slot_region_weight.append(torch.tensor(weights, dtype=torch.float32, device=device))
            self.slot_targets.append({
                n: {part: t.to(device) for part, t in
                    self.kind.stack([layer_parts(r.targets, n) for r in chosen]).items()}
                for n in self.style_layers})

    def keep(self, index: torch.Tensor) -> "Objective":
        """The same objective restricted to the jobs at `index` (a LongTensor)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        rows = index.tolist()
        out.kind = self.kind.keep(rows) if hasattr(self.kind, "keep") else self.kind
        out.content_targets = {k: v[index] for k, v in self.content_targets.items()}
        out.slot_masks = [[masks[i] for i in rows] for masks in self.slot_masks]
        out.slot_region_weight = [w[index] for w in self.slot_region_weight]
        out.slot_targets = [{n: {p: t[index] for p, t in parts.items()} for n, parts in slot.items()}
                            for slot in self.slot_targets]
        if self.content_maps is not None:
            out.content_maps = [self.content_maps[i] for i in rows]
        if self.photo is not None:
            out.photo = (self.photo[0][index], [self.photo[1][i] for i in rows])
        out._at = {}
        for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "layer_weights",
                     "photo_weight"):
            setattr(out, name, getattr(self, name)[index])
        if self.temporal is not None:
            out.temporal = tuple(t[index] for t in self.temporal)
        return out

    def at_size(self, h: int, w: int) -> dict:
        """Guidance of every slot at every style layer, its mass and the slot weights, and the
        content weight maps, for images of h × w (computed once per size)."""
        if (h, w) in self._at:
            return self._at[(h, w)]
        guides, masses, weights = [], [], []
        for masks, region_weight in zip(self.slot_masks, self.slot_region_weight):
            if all(m is None for m in masks):
                guides.append(None)
                masses.append({l: None for l in self.style_layers})
                weights.append(region_weight)
                continue
            full = torch.cat([resize_mask(m.to(self.device), (h, w)) if m is not None
                              else torch.ones(1, 1, h, w, device=self.device) for m in masks])
            per_layer = layer_guides(full, self.style_layers)
            guides.append(per_layer)
            masses.append({l: widen(g).flatten(1).sum(1) for l, g in per_layer.items()})
            weights.append(region_weight * mass_fraction(full))
        content = None
        if self.content_maps is not None:
            full = torch.cat([resize_mask(m.to(self.device), (h, w)) if m is not None
                              else torch.ones(1, 1, h, w, device=self.device) for m in self.content_maps])
            content = layer_guides(full, self.content_layers)
        photo = None
        if self.photo is not None:
            photo = torch.cat([resize_mask(m.to(self.device), (h, w)) if m is not None
                               else torch.zeros(1, 1, h, w, device=self.device) for m in self.photo[1]])
        self._at[(h, w)] = out = {"guides": guides, "masses": masses, "weights": weights, "content": content,
                                  "photo": photo}
        return out

    def value_and_grad(self, images: torch.Tensor, autocast: ContextManager | None = None
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor], torch.Tensor]:
        """Loss (B,), its parts, and the gradient of the summed loss w.r.t. images (B, 3, H, W).

        The network runs under `autocast` (bf16 on CUDA); the backward pass outside it."""
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            total, parts = self(x, autocast)
            total.sum().backward()
        return total.detach(), {k: v.detach() for k, v in parts.items()}, x.grad

    def content_term(self, acts: Mapping[str, torch.Tensor], at: dict) -> torch.Tensor:
        """The content loss (B,), averaged over content layers, weighted by the maps if any."""
        total = 0.0
        for n in self.content_layers:
            if at["content"] is None:
                total = total + losses.content_loss(acts[n], self.content_targets[n])
            else:
                total = total + losses.weighted_content_loss(acts[n], self.content_targets[n], at["content"][n])
        return total / len(self.content_layers)

    def style_term(self, acts: Mapping[str, torch.Tensor], at: dict) -> torch.Tensor:
        """The style loss (B,): Σ over slots of weight × Σ over layers of λ_l × the loss kind's."""
        total = 0.0
        for k, slot in enumerate(self.slot_targets):
            guides = at["guides"][k]
            layered = 0.0
            for i, n in enumerate(self.style_layers):
                f = acts[n].flatten(2)
                g = guides[n].flatten(2) if guides is not None else None
                mass = at["masses"][k][n]
                if mass is None:
                    mass = torch.full((f.shape[0],), float(f.shape[-1]), device=f.device)
                layered = layered + self.layer_weights[:, i] * self.kind.loss(f, g, mass, slot[n])
            total = total + at["weights"][k] * layered
        return total

    def __call__(self, images: torch.Tensor, autocast: ContextManager | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, H, W) -> total loss (B,) and its parts, each (B,) in fp32."""
        if hasattr(self.kind, "advance"):   # sliced: new projections every evaluation
            self.kind.advance()
        with autocast or nullcontext():
            acts = self.feats(images, self.layers)
        at = self.at_size(*images.shape[-2:])
        content = self.content_term(acts, at)
        style = self.style_term(acts, at)
        parts = {"content": content, "style": style}
        total = self.content_weight * content + self.style_weight * style
        if self.use_tv:
            parts["tv"] = losses.tv_loss(losses.widen(images))
            total = total + self.tv_weight * parts["tv"]
        if self.temporal is not None:
            parts["temporal"] = losses.temporal_loss(images.float(), *self.temporal)
            total = total + self.temporal_weight * parts["temporal"]
        if self.photo is not None:
            parts["photo"] = self.photo_term(images, at)
            total = total + self.photo_weight * parts["photo"]
        parts["total"] = total
        return total, parts

    def photo_term(self, images: torch.Tensor, at: dict) -> torch.Tensor:
        """Masked mean squared pixel difference to the photo (B,), where regions keep it."""
        return losses.temporal_loss(images.float(), self.photo[0].float(), at["photo"])


def style_grams(feats: VGGFeatures, style: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram targets (1, C, C) of one style image at the size it is given."""
    return style_loss.style_targets(feats, style, layers, "gram")

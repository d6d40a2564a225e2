"""The objective of a batch of jobs: content + style + TV (+ temporal) loss, each job with its own targets.

Per-job weights are (B,) tensors and per-job style targets are stacked (B, C, C), so jobs
that differ in weights, style or content still share one forward and backward pass. Under
autocast the network runs in bf16; Gram matrices and losses are always fp32 (losses.py).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import ContextManager, Mapping, Sequence

import torch

from . import losses
from .features import VGGFeatures
from ..params import Params

StyleTargets = Mapping[str, torch.Tensor]          # layer -> Gram (1, C, C)


class Objective:
    """Weighted losses of images (B, 3, H, W) against fixed per-job targets."""

    def __init__(self, feats: VGGFeatures, content_targets: Mapping[str, torch.Tensor],
                 style_targets: Sequence[StyleTargets] | StyleTargets, params: Sequence[Params] | Params,
                 temporal: tuple[torch.Tensor, torch.Tensor] | None = None):
        params = [params] if isinstance(params, Params) else list(params)
        if isinstance(style_targets, Mapping):
            style_targets = [style_targets]
        first = params[0]
        self.feats = feats
        self.content_layers, self.style_layers = first.content_layers, first.style_layers
        self.layers = list(dict.fromkeys([*self.content_layers, *self.style_layers]))
        device = next(iter(content_targets.values())).device
        self.content_targets = {k: v.detach() for k, v in content_targets.items()}
        self.style_targets = {n: torch.cat([t[n] for t in style_targets]).to(device)
                              for n in self.style_layers}                      # (B, C, C)

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

    def keep(self, index: torch.Tensor) -> "Objective":
        """The same objective restricted to the jobs at `index` (a LongTensor)."""
        out = object.__new__(type(self))
        out.__dict__.update(self.__dict__)
        out.content_targets = {k: v[index] for k, v in self.content_targets.items()}
        out.style_targets = {k: v[index] for k, v in self.style_targets.items()}
        for name in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "layer_weights"):
            setattr(out, name, getattr(self, name)[index])
        if self.temporal is not None:
            out.temporal = tuple(t[index] for t in self.temporal)
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

    def __call__(self, images: torch.Tensor, autocast: ContextManager | None = None
                 ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, H, W) -> total loss (B,) and its parts, each (B,) in fp32."""
        with autocast or nullcontext():
            acts = self.feats(images, self.layers)
        content = sum(losses.content_loss(acts[n], self.content_targets[n]) for n in self.content_layers)
        content = content / len(self.content_layers)
        style = sum(self.layer_weights[:, i] * losses.style_layer_loss(losses.gram(acts[n]), self.style_targets[n])
                    for i, n in enumerate(self.style_layers))
        parts = {"content": content, "style": style}
        total = self.content_weight * content + self.style_weight * style
        if self.use_tv:
            parts["tv"] = losses.tv_loss(losses.widen(images))
            total = total + self.tv_weight * parts["tv"]
        if self.temporal is not None:
            parts["temporal"] = losses.temporal_loss(images.float(), *self.temporal)
            total = total + self.temporal_weight * parts["temporal"]
        parts["total"] = total
        return total, parts


def style_grams(feats: VGGFeatures, style: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """Gram targets (1, C, C) of one style image at the size it is given."""
    with torch.no_grad():
        acts = feats(style, list(layers))
    return {name: losses.gram(acts[name]) for name in layers}

"""Style losses: what a style target stores, how styles blend, and the loss against a target.

A job's style is a list of regions (`StyleRegion`): each has its own targets, an optional
guidance mask (Gatys et al. 2017, "Controlling Perceptual Factors in Neural Style Transfer")
and a weight. One image without regions is one region covering everything.

A loss kind (`StyleLoss`) sees a layer's features f (B, C, N) and, in a region, the layer's
guidance g (B, 1, N) ≥ 0 (engine/guidance.py), which weights every position:
- `target` computes what is stored (and cached) for one style image, keyed `<layer>` for the
  loss's main tensor or `<layer>.<part>` for further parts;
- `blend` mixes several styles' targets with weights summing to 1;
- `loss` is one value per image (B,).
A `tileable` loss is a function of weighted sums over positions only (`moments`): the exact
tiled objective adds those sums tile by tile (engine/tiled.py). A loss that is not (a sort is
global) says so, and the tiled objective refuses it instead of approximating.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import torch

from .guidance import mass_of
from .losses import widen

_EPS = 1e-8


@dataclass(frozen=True)
class StyleRegion:
    """One region of a job's style: targets of the job's loss kind, where they apply, how much."""
    targets: Mapping[str, torch.Tensor]   # "<layer>" / "<layer>.<part>" -> (1, ...) tensors
    mask: torch.Tensor | None = None      # (1, 1, h, w) in [0, 1], any size (resized to the stage); None: everywhere
    weight: float = 1.0                   # multiplies the region's style term




def layer_parts(targets: Mapping[str, torch.Tensor], layer: str) -> dict[str, torch.Tensor]:
    """The target tensors of one layer: {"": main, "<part>": ...}."""
    out = {}
    for key, value in targets.items():
        name, _, part = key.partition(".")
        if name == layer:
            out[part] = value
    return out


class GramLoss:
    """The paper's: relative squared error between (guided) Gram matrices (losses.py explains
    the normalisation). In a region, G = Σ_n g_n f_n f_nᵀ / Σ_n g_n: the guidance weights each
    position once (soft masks are weights, so a feathered edge blends the two styles' statistics
    instead of cutting them), normalised by the guidance's mass so a region's Gram is an
    average like the whole image's."""

    name = "gram"
    tileable = True

    def moments(self, f: torch.Tensor, g: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """Weighted sums over positions: {"": Σ g f fᵀ (B, C, C)}. f (B, C, N), g (B, 1, N) or None."""
        f = widen(f)
        # Autocast would run this bmm in bf16 again (it casts matmul inputs down): a Gram sums N
        # products, and bf16's 8-bit mantissa would blur the style targets and the loss.
        with torch.autocast(f.device.type, enabled=False):
            return {"": torch.bmm(f * g if g is not None else f, f.transpose(1, 2))}

    def from_moments(self, m: Mapping[str, torch.Tensor], mass: torch.Tensor,
                     target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss (B,) from summed moments and the guidance mass (B,) (positions when unguided)."""
        g = m[""] / mass.clamp_min(_EPS).view(-1, 1, 1)
        t = target[""]
        diff = (g - t).pow(2).flatten(1).mean(1)
        return diff / (t.pow(2).flatten(1).mean(1) + _EPS)

    def loss(self, f: torch.Tensor, g: torch.Tensor | None, mass: torch.Tensor,
             target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.from_moments(self.moments(f, g), mass, target)

    def target(self, f: torch.Tensor, g: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """What is stored for one style image at one layer: {"": Gram (1, C, C)}."""
        return self.target_from_moments(self.moments(f, g), mass_of(f, g))

    def target_from_moments(self, m: Mapping[str, torch.Tensor], mass: torch.Tensor) -> dict[str, torch.Tensor]:
        """The target from summed moments (a large style image's, added tile by tile)."""
        return {"": m[""] / mass.clamp_min(_EPS).view(-1, 1, 1)}

    def blend(self, targets: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
              ) -> dict[str, torch.Tensor]:
        """Weights sum to 1: a blend of Grams is the Gram of the styles' mixture."""
        return {key: sum(w * t[key] for t, w in zip(targets, weights)) for key in targets[0]}

    def stack(self, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One layer's targets of several jobs as a batch."""
        return {key: torch.cat([t[key] for t in targets]) for key in targets[0]}

    def valid(self, tensors: Mapping[str, torch.Tensor], layers: Sequence[str]) -> bool:
        """A cache entry's shape check (its checksum is checked separately)."""
        return set(tensors) == set(layers) and all(
            t.dim() == 3 and t.shape[1] == t.shape[2] and bool(torch.isfinite(t).all()) for t in tensors.values())


LOSSES: dict[str, object] = {"gram": GramLoss()}


def _register_more() -> None:
    from .distribution_losses import MeanCovLoss, SlicedLoss

    LOSSES.update(meancov=MeanCovLoss(), sliced=SlicedLoss())


_register_more()


def for_jobs(name: str, params: Sequence):
    """The loss kind of one objective: a kind with per-job state (sliced's projection seeds and
    evaluation count) gets a fresh instance for these jobs; others are shared."""
    kind = get(name)
    return kind.for_jobs(params) if hasattr(kind, "for_jobs") else kind


def get(name: str):
    """The loss kind called `name` (params.CHOICES["style_loss"] lists the names)."""
    try:
        return LOSSES[name]
    except KeyError:
        raise ValueError(f"unknown style loss {name!r}; known: {', '.join(LOSSES)}") from None


def style_targets(feats, image: torch.Tensor, layers: Sequence[str], loss: str = "gram",
                  mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """One style image's targets (1, ...) at the size it is given, of loss kind `loss`; `mask`
    (1, 1, H, W) in [0, 1] at the image's size uses only that part of the painting."""
    from .guidance import layer_guides

    kind = get(loss)
    with torch.no_grad():
        acts = feats(image, list(layers))
        guides = layer_guides(mask, layers) if mask is not None else {}
        out = {}
        for name in layers:
            f = acts[name].flatten(2)
            g = guides[name].flatten(2) if name in guides else None
            for part, value in kind.target(f, g).items():
                out[name + ("." + part if part else "")] = value
    return out


def blend(targets: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float], loss: str = "gram"
          ) -> dict[str, torch.Tensor]:
    """Blend several styles' targets with weights normalised to sum 1."""
    total = float(sum(weights))
    if not targets or len(targets) != len(weights) or min(weights) < 0 or not total > 0:
        # Callers validate user input; this guards the core against a silent division by zero.
        raise ValueError(f"a blend needs one weight ≥ 0 per style with a positive sum, got {list(weights)}")
    kind = get(loss)
    layers = list(dict.fromkeys(k.partition(".")[0] for k in targets[0]))
    out: dict[str, torch.Tensor] = {}
    for layer in layers:
        mixed = kind.blend([layer_parts(t, layer) for t in targets], [w / total for w in weights])
        for part, value in mixed.items():
            out[layer + ("." + part if part else "")] = value
    return out

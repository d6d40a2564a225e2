"""The optimization loop: objective, L-BFGS or Adam, coarse-to-fine stages (pure core).

Nothing here reads files, prints or resizes with PIL. Progress leaves through a callback that
receives a small `Progress` value; style targets arrive through a function of the stage size,
so the caller decides whether they come from a cache or a fresh forward pass.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Mapping

import torch

from . import losses, pixels
from .errors import NSTError
from .features import VGGFeatures
from .params import Params

StyleTargets = Mapping[str, torch.Tensor]          # layer -> Gram (1, C, C)
StyleTargetsFn = Callable[[int], StyleTargets]     # stage long side -> targets


@dataclass(frozen=True)
class Progress:
    step: int                 # objective evaluations so far, all stages
    total: int                # evaluation budget, all stages
    stage: int                # 0-based coarse-to-fine stage
    stages: int
    losses: dict[str, float]  # total, content, style, tv of the last evaluation
    elapsed: float            # seconds since the start


@dataclass
class Result:
    image: torch.Tensor                      # (1, 3, H, W) RGB in [0, 1]
    losses: dict[str, float]                 # of the final image at the final stage
    steps: int                               # objective evaluations performed
    history: list[float] = field(default_factory=list)   # total loss per evaluation


class DivergedError(NSTError):
    """The loss became NaN or infinite."""


class Objective:
    """Weighted content + style + TV loss of a batch of images against fixed targets."""

    def __init__(self, feats: VGGFeatures, content_targets: Mapping[str, torch.Tensor],
                 style_targets: StyleTargets, params: Params):
        self.feats = feats
        self.content_targets = dict(content_targets)
        self.style_targets = dict(style_targets)
        self.params = params
        weights = params.style_layer_weights or (1.0,) * len(params.style_layers)
        total = sum(weights)
        self.layer_weights = {name: w / total for name, w in zip(params.style_layers, weights)}
        self.layers = list(dict.fromkeys([*params.content_layers, *params.style_layers]))

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """images (B, 3, H, W) -> total loss (B,) and its parts, each (B,)."""
        p = self.params
        acts = self.feats(images, self.layers)
        content = sum(losses.content_loss(acts[n], self.content_targets[n]) for n in p.content_layers)
        content = content / len(p.content_layers)
        style = sum(w * losses.style_layer_loss(losses.gram(acts[n]), self.style_targets[n])
                    for n, w in self.layer_weights.items())
        parts = {"content": content, "style": style}
        total = p.content_weight * content + p.style_weight * style
        if p.tv_weight > 0:
            parts["tv"] = losses.tv_loss(images)
            total = total + p.tv_weight * parts["tv"]
        parts["total"] = total
        return total, parts


def initial_image(content: torch.Tensor, init: str | torch.Tensor, seed: int) -> torch.Tensor:
    """The starting point: the content image, seeded uniform noise, or a given image."""
    if isinstance(init, torch.Tensor):
        return pixels.resize(init.to(content), tuple(content.shape[-2:])).clone()
    if init == "content":
        return content.clone()
    if init == "noise":
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=gen).to(content)
    raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}")


def _run_stage(objective: Objective, image: torch.Tensor, steps: int, params: Params,
               on_eval: Callable[[dict[str, torch.Tensor]], None]) -> torch.Tensor:
    image = image.detach().clone().requires_grad_(True)
    if params.optimizer == "adam":
        opt = torch.optim.Adam([image], lr=params.learning_rate)
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            total, parts = objective(image)
            total.sum().backward()
            on_eval(parts)
            opt.step()
        return image.detach()
    # L-BFGS without line search, one objective evaluation per iteration; the tolerances are
    # disabled so the budget, not a scale-dependent threshold, decides when to stop.
    opt = torch.optim.LBFGS([image], lr=params.learning_rate, max_iter=steps, max_eval=steps,
                            tolerance_grad=-1.0, tolerance_change=-1.0, history_size=100)

    def closure() -> torch.Tensor:
        opt.zero_grad(set_to_none=True)
        total, parts = objective(image)
        loss = total.sum()
        loss.backward()
        on_eval(parts)
        return loss

    opt.step(closure)
    return image.detach()


def stylize(feats: VGGFeatures, content: torch.Tensor, style_targets: StyleTargetsFn, params: Params,
            init: str | torch.Tensor | None = None,
            progress: Callable[[Progress], None] | None = None) -> Result:
    """Stylize `content` (1, 3, H, W) RGB [0, 1]; the output long side is `params.size`.

    `style_targets(long_side)` returns the (blended) Gram targets for a stage whose output has
    that long side; under `preserve_color="luminance"` they must be built from grey style images
    (see `pixels.style_variant`).
    """
    start = time.perf_counter()
    luminance_only = params.preserve_color == "luminance"
    sizes, budgets = params.stage_sizes(tuple(content.shape[-2:])), params.stage_steps()
    total_steps, done = sum(budgets), 0
    history: list[float] = []
    image: torch.Tensor | None = None
    for stage, (long_side, budget) in enumerate(zip(sizes, budgets)):
        target = pixels.resize_long_side(content, long_side)
        if luminance_only:
            target = pixels.grey(target)
        with torch.no_grad():
            content_acts = feats(target, params.content_layers)
        objective = Objective(feats, {k: v.detach() for k, v in content_acts.items()},
                              style_targets(long_side), params)
        if image is None:
            start_from = init if init is not None else params.init
            if luminance_only and isinstance(start_from, torch.Tensor):
                start_from = pixels.grey(start_from)
            image = initial_image(target, start_from, params.seed)
        else:
            # Coarse-to-fine: the next stage starts from the upsampled previous result.
            image = pixels.resize(image.clamp(0, 1), tuple(target.shape[-2:]))

        def on_eval(parts: dict[str, torch.Tensor], stage: int = stage) -> None:
            nonlocal done
            done += 1
            last = {k: float(v.detach().sum()) for k, v in parts.items()}
            if not torch.isfinite(torch.tensor(last["total"])):
                raise DivergedError(f"the loss diverged at step {done} (got {last['total']}); lower "
                                    "lr or the loss weights")
            history.append(last["total"])
            if progress is not None:
                progress(Progress(done, total_steps, stage, len(sizes), dict(last),
                                  time.perf_counter() - start))

        image = _run_stage(objective, image, budget, params, on_eval)
    assert image is not None
    image = image.clamp(0.0, 1.0)
    # Report the losses of the image we return (the last evaluation saw the one before the last
    # update, and saw it unclamped): one extra forward pass, not counted as a step.
    with torch.no_grad():
        final = {k: float(v.sum()) for k, v in objective(image)[1].items()}
    if luminance_only:
        image = pixels.combine_luminance(image, pixels.resize(content, tuple(image.shape[-2:])))
    return Result(image=image, losses=final, steps=done, history=history)


def style_grams(feats: VGGFeatures, style: torch.Tensor, layers: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Gram targets (1, C, C) of one style image at the size it is given."""
    with torch.no_grad():
        acts = feats(style, layers)
    return {name: losses.gram(acts[name]) for name in layers}

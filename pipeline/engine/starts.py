"""What a stage starts from: the first stage's initial image, and each stage's temporal targets.

Pure tensor functions used by the optimization loop (optimize.py), kept apart so the loop
stays one readable module.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import torch

from . import pixels

if TYPE_CHECKING:
    from .optimize import JobInput


def initial_image(content: torch.Tensor, init: str | torch.Tensor, seed: int) -> torch.Tensor:
    """The starting point: the content image, seeded uniform noise, or a given image."""
    if isinstance(init, torch.Tensor):
        return pixels.resize(init.to(content), tuple(content.shape[-2:])).clone()
    if init == "content":
        return content.clone()
    if init == "noise":
        # Drawn on the CPU whatever the device, so a seed gives the same image everywhere.
        gen = torch.Generator(device="cpu").manual_seed(seed)
        return torch.rand(content.shape, generator=gen, device="cpu").to(content)
    raise ValueError(f"init must be 'content', 'noise' or an image tensor, got {init!r}")


def stage_temporal(specs: Sequence["JobInput"], shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The batch's temporal targets at this stage's size; a job without one gets a zero mask."""
    if all(s.temporal is None for s in specs):
        return None
    warped, masks = [], []
    for s in specs:
        device = s.content.device
        if s.temporal is None:
            warped.append(torch.zeros(1, 3, *shape, device=device))
            masks.append(torch.zeros(1, 1, *shape, device=device))
            continue
        w, m = s.temporal
        w = pixels.resize(w.to(device).float(), shape)
        warped.append(pixels.grey(w) if s.params.preserve_color == "luminance" else w)
        masks.append(pixels.resize(m.to(device).float(), shape))
    return torch.cat(warped), torch.cat(masks)

"""Scores that compare results across jobs and settings (pure core: tensors in, floats out).

A job's losses are relative to its own weights and size, so they cannot rank a grid. These
scores measure every result the same way, at one fixed evaluation size (docs/quality.md):
- `style_distance`: the sliced Wasserstein distance (engine/sliced.py) between the output's
  and the style's VGG features on the paper's five style layers, with FIXED projections
  (`PROJECTIONS` per layer, drawn once from `SEED` + the layer's index), so it is
  deterministic. Per layer it is divided by the style's own mean squared projection (the
  distance of an all-zero feature map), so the five layers weigh alike; the score is their
  mean. A blend is the mixture of its styles' features, each position weighted by its
  style's blend weight over that style's position count.
- `content_distance`: ‖F − P‖² / ‖P‖² on conv4_2, output against content, at the same size.
Both are computed one job at a time in fp32 with autocast off, so a job's score does not
depend on its batch-mates or the run's precision.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from . import pixels
from .features import VGGFeatures
from .layers import scaled_size
from .sliced import projections, sliced_wasserstein

VERSION = 1
EVAL_SIZE = 256        # long side: cheap (a quarter of a 512 px forward), and conv5_1 keeps 16 × 12 positions
MIN_SIDE = 16          # conv5_1 needs 16 px on the short side: very wide images are evaluated larger
STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYER = "conv4_2"
PROJECTIONS = 64       # directions per layer: the score's spread over seeds is in docs/quality.md
SEED = 2022


def spec() -> dict:
    """How the scores were measured: stored beside them in the record."""
    return {"size": EVAL_SIZE, "layers": list(STYLE_LAYERS), "content_layer": CONTENT_LAYER,
            "projections": PROJECTIONS, "seed": SEED, "version": VERSION}


def eval_shape(height: int, width: int) -> tuple[int, int]:
    """(h, w) at the evaluation size, the short side at least MIN_SIDE."""
    h, w = scaled_size(height, width, EVAL_SIZE)
    if min(h, w) < MIN_SIDE:
        h, w = scaled_size(height, width, round(EVAL_SIZE * MIN_SIDE / min(h, w)))
    return h, w


def _features(net: VGGFeatures, image: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
    """fp32, autocast and TF32 off, the uncompiled forward (a compiled one would recompile here)."""
    device = image.device
    tf32 = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    try:
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        with torch.no_grad(), torch.autocast(device.type, enabled=False):
            x = image.to(torch.float32).contiguous()
            return {k: v.float() for k, v in type(net).forward(net, x, list(layers)).items()}
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32


def _flat(f: torch.Tensor) -> torch.Tensor:
    return f.flatten(2).transpose(1, 2)          # (1, C, H, W) -> (1, N, C)


@dataclass
class StyleReference:
    """A style (or blend) as the score sees it: per layer its features (1, M, C), their
    weights (1, M) and the normalisation (its mean squared projection)."""
    features: dict[str, torch.Tensor]
    weights: dict[str, torch.Tensor]
    norms: dict[str, float]


def _directions(layer: str, channels: int, device: torch.device) -> torch.Tensor:
    return projections(channels, PROJECTIONS, SEED + STYLE_LAYERS.index(layer), device, torch.float32)


def style_reference(net: VGGFeatures, styles: Sequence[tuple[torch.Tensor, float]]) -> StyleReference:
    """Styles (1, 3, H, W) in [0, 1] with blend weights -> their mixture at the evaluation size."""
    total = sum(w for _, w in styles) or 1.0
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in STYLE_LAYERS}
    weights: dict[str, list[torch.Tensor]] = {k: [] for k in STYLE_LAYERS}
    for image, weight in styles:
        small = pixels.resize(image.float(), eval_shape(*image.shape[-2:]))
        for layer, f in _features(net, small, STYLE_LAYERS).items():
            y = _flat(f)
            parts[layer].append(y)
            weights[layer].append(y.new_full(y.shape[:2], weight / total / y.shape[1]))
    features = {k: torch.cat(v, 1) for k, v in parts.items()}
    wy = {k: torch.cat(v, 1) for k, v in weights.items()}
    norms = {}
    for layer, y in features.items():
        py = torch.matmul(y, _directions(layer, y.shape[-1], y.device))          # (1, M, P)
        norms[layer] = float((py.pow(2) * wy[layer].unsqueeze(-1)).sum(1).div(wy[layer].sum()).mean().clamp_min(1e-12))
    return StyleReference(features, wy, norms)


def style_distance(net: VGGFeatures, output: torch.Tensor, reference: StyleReference,
                   shape: tuple[int, int]) -> tuple[float, dict[str, float]]:
    """The output (1, 3, H, W) at `shape` against the reference: (mean over layers, per layer)."""
    feats = _features(net, pixels.resize(output.float(), shape), STYLE_LAYERS)
    per = {}
    for layer, f in feats.items():
        y = reference.features[layer]
        d = sliced_wasserstein(_flat(f), y, _directions(layer, y.shape[-1], y.device), wy=reference.weights[layer])
        per[layer] = float(d[0]) / reference.norms[layer]
    return sum(per.values()) / len(per), per


def content_features(net: VGGFeatures, content: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    return _features(net, pixels.resize(content.float(), shape), [CONTENT_LAYER])[CONTENT_LAYER]


def content_distance(net: VGGFeatures, output: torch.Tensor, target: torch.Tensor, shape: tuple[int, int]) -> float:
    """‖F − P‖² / ‖P‖² on conv4_2: 0 for the content itself, about 1 for an unrelated image."""
    f = _features(net, pixels.resize(output.float(), shape), [CONTENT_LAYER])[CONTENT_LAYER]
    return float((f - target).pow(2).sum() / target.pow(2).sum().clamp_min(1e-12))

"""VGG-19 with named layers and the preprocessing of its weights (layers.py: the architecture
as data; weights.py: where the weights come from).

`VGGFeatures` takes RGB images in [0, 1] and applies the preprocessing that belongs to its
weights inside, so callers never think about BGR or mean pixels.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..errors import ParamError, WeightsError
from .layers import LAYER_INDEX, LAYER_NAMES, check_layers, min_side
from .weights import load_state

# Preprocessing of the two families of weights (applied inside `VGGFeatures`).
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class VGGFeatures(nn.Module):
    """A frozen VGG-19 returning named activations.

    `feats(images, layers)`: images (B, 3, H, W) RGB in [0, 1] -> {name: activation}. The forward
    pass stops at the deepest requested layer; `layers=` at construction drops deeper weights.
    """

    def __init__(self, weights: str = "original", pooling: str = "max",
                 layers: Sequence[str] | None = None, preprocess: str = "auto"):
        super().__init__()
        if pooling not in ("max", "avg"):
            raise WeightsError(f"pooling must be 'max' or 'avg', got {pooling!r}")
        state, self.weights_id = load_state(weights)
        if preprocess == "auto":
            preprocess = "caffe" if weights == "original" else "torchvision"
        if preprocess not in ("caffe", "torchvision"):
            raise WeightsError(f"preprocess must be auto, caffe or torchvision, got {preprocess!r}")
        self.preprocess, self.pooling = preprocess, pooling
        last = len(LAYER_NAMES) - 1
        if layers:
            check_layers(layers)
            last = max(LAYER_INDEX[n] for n in layers)
        self.names = LAYER_NAMES[: last + 1]
        self.layers = nn.ModuleDict()
        channels = 3
        for name in self.names:
            if name.startswith("conv"):
                out = state[name + ".weight"].shape[0]
                conv = nn.Conv2d(channels, out, kernel_size=3, padding=1)
                conv.weight.data.copy_(state[name + ".weight"])
                conv.bias.data.copy_(state[name + ".bias"])
                self.layers[name], channels = conv, out
            elif name.startswith("relu"):
                self.layers[name] = nn.ReLU(inplace=False)
            else:
                # Gatys et al. found average pooling gives slightly more appealing results.
                pool = nn.MaxPool2d if pooling == "max" else nn.AvgPool2d
                self.layers[name] = pool(kernel_size=2, stride=2)
        if preprocess == "caffe":
            # RGB [0,1] -> BGR [0,255] minus the mean pixel: one affine map per channel.
            mean = torch.tensor(CAFFE_MEAN_BGR[::-1]).view(1, 3, 1, 1)
            scale = torch.full((1, 3, 1, 1), 255.0)
            self.flip_bgr = True
        else:
            mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            scale = 1.0 / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
            self.flip_bgr = False
        self.register_buffer("mean", mean, persistent=False)
        self.register_buffer("scale", scale, persistent=False)
        self.requires_grad_(False)
        self.eval()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """RGB [0, 1] (B, 3, H, W) -> the input this network was trained on."""
        if self.flip_bgr:
            return (images * self.scale - self.mean).flip(1)
        return (images - self.mean) * self.scale

    def forward(self, images: torch.Tensor, layers: Sequence[str]) -> dict[str, torch.Tensor]:
        check_layers(layers)
        wanted = set(layers)
        if not wanted:
            return {}
        last = max(LAYER_INDEX[n] for n in wanted)
        if last >= len(self.names):
            raise WeightsError(f"layer {LAYER_NAMES[last]} is deeper than this network was built for "
                               f"(up to {self.names[-1]})")
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
        need, (h, w) = min_side([LAYER_NAMES[last]]), images.shape[-2:]
        if min(h, w) < need:
            # Otherwise a pooling layer fails with "Output size is too small" deep inside torch.
            raise ParamError(f"an image of {w} × {h} px is too small for layer {LAYER_NAMES[last]}, which needs "
                             f"at least {need} px on each side; raise size (or style_scale), or use shallower layers")
        out = {}
        x = self.normalize(images)
        for name in self.names[: last + 1]:
            x = self.layers[name](x)
            if name in wanted:
                out[name] = x
        return out

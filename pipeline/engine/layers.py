"""VGG-19 as data: its layer names and channels, and the image sizes they imply.

Torch-free, so the parameter checks, job ids, grouping and memory estimates that `validate`,
`plan` and `status` need never load torch.
"""
from __future__ import annotations

from typing import Sequence

from ..errors import WeightsError

# torchvision's cfgs["E"]: channel counts, "M" for a pooling layer.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")


def _layer_names() -> list[str]:
    names, block, conv = [], 1, 1
    for item in VGG19_CFG:
        if item == "M":
            names.append(f"pool{block}")
            block, conv = block + 1, 1
        else:
            names += [f"conv{block}_{conv}", f"relu{block}_{conv}"]
            conv += 1
    return names


LAYER_NAMES: tuple[str, ...] = tuple(_layer_names())
LAYER_INDEX = {name: i for i, name in enumerate(LAYER_NAMES)}
CONV_NAMES: tuple[str, ...] = tuple(n for n in LAYER_NAMES if n.startswith("conv"))


def check_layers(layers: Sequence[str]) -> None:
    unknown = [name for name in layers if name not in LAYER_INDEX]
    if unknown:
        raise WeightsError(
            f"unknown VGG-19 layer {unknown[0]!r}; names look like conv4_2, relu3_1, pool5 "
            f"(conv1_1 … conv5_4, relu1_1 … relu5_4, pool1 … pool5)")


def pools_before(name: str) -> int:
    """How many 2×2 poolings an image passes before reaching `name`."""
    return sum(1 for n in LAYER_NAMES[: LAYER_INDEX[name]] if n.startswith("pool"))


def min_side(layers: Sequence[str]) -> int:
    """The smallest image side (px) that reaches the deepest of `layers`: each 2×2 pooling halves it."""
    if not layers:
        return 1
    return 2 ** pools_before(max(layers, key=LAYER_INDEX.__getitem__))


def scaled_size(height: int, width: int, long_side: int) -> tuple[int, int]:
    """(h, w) with the long side set to `long_side`, keeping the aspect ratio (each side ≥ 1)."""
    scale = long_side / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))

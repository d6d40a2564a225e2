"""The engine places every tensor it creates explicitly, so what runs on CPU also runs on a GPU.

On a GPU, a tensor made without `device=` lands on the CPU and the first operation that mixes
it with the images fails (`torch.eye` added to a covariance once broke `preserve_color:
histogram` on CUDA only). Here the engine runs on CPU inputs under `strict_devices()`: the
default device is `meta`, so such a tensor cannot mix with the CPU images, and any factory
call made by our own code without an explicit `device=` fails on the spot, with its line.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest
import torch
from torch.overrides import TorchFunctionMode

from conftest import make_content, make_style
from pipeline.engine import losses, pixels
from pipeline.engine.features import VGGFeatures
from pipeline.engine.objective import style_grams
from pipeline.engine.optimize import JobInput, Precision, stylize_batch
from pipeline.imaging import read_image
from pipeline.params import params_from_mapping

PACKAGE = str(Path(__file__).resolve().parents[1] / "pipeline")
# torch's tensor factories: each takes `device=` and otherwise uses the default device.
FACTORIES = {torch.tensor, torch.as_tensor, torch.asarray, torch.zeros, torch.ones, torch.empty, torch.full,
             torch.eye, torch.arange, torch.linspace, torch.logspace, torch.rand, torch.randn, torch.randint,
             torch.randperm, torch.scalar_tensor}


class _ExplicitDevices(TorchFunctionMode):
    """Fails a factory call from pipeline/ that does not name its device."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in FACTORIES and kwargs.get("device") is None:
            caller = sys._getframe(1)
            if caller.f_code.co_filename.startswith(PACKAGE):
                raise AssertionError(f"torch.{func.__name__} without device= at "
                                     f"{caller.f_code.co_filename}:{caller.f_lineno}")
        return func(*args, **kwargs)


@contextmanager
def strict_devices() -> Iterator[None]:
    before = torch.get_default_device()
    torch.set_default_device("meta")
    try:
        with _ExplicitDevices():
            yield
    finally:
        torch.set_default_device(before)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("placement")
    contents = [read_image(make_content(root / f"c{i}.png", size=(40, 32), seed=i)) for i in range(2)]
    style = read_image(make_style(root / "s.png", size=(36, 36)))
    return contents, style


@pytest.fixture(scope="module")
def avg_feats():
    return VGGFeatures(pooling="avg")


def _specs(feats, contents, style, jobs: list[dict]) -> list[JobInput]:
    """One job per content image; `init_image: True` starts a job from the mirrored content."""
    specs = []
    for content, values in zip(contents, jobs):
        values = dict(values)
        init = torch.flip(content, dims=[-1]).contiguous() if values.pop("init_image", False) else None
        params = params_from_mapping({"size": 32, "steps": 4, **values})

        def targets(side: int, params=params, content=content):
            # Built inside the run, as the worker does, so colour matching runs under the mode too.
            variant = pixels.style_variant(style, content, params.preserve_color)
            return style_grams(feats, pixels.resize_long_side(variant, side), params.style_layers)

        specs.append(JobInput(content, targets, params, init))
    return specs


# Every engine feature that creates tensors: colour modes, TV, both optimizers, coarse-to-fine,
# early stop (checked every 25 steps), noise and image inits, per-layer style weights, jobs
# leaving the batch early, max and avg pooling.
SHALLOW = {"style_layers": ["conv1_1", "conv2_1", "conv3_1"], "content_layers": ["conv3_2"]}
CASES = {
    "lbfgs-histogram-luminance-multiscale-tv": [
        {"preserve_color": "histogram", "multiscale": 2, "tv_weight": 1.0, "init": "noise", "seed": 3},
        {"preserve_color": "luminance", "multiscale": 2, "tv_weight": 0.5}],
    "adam-layer-weights-image-init": [   # shallow layers: 26 steps (an early-stop check) stay cheap
        {"optimizer": "adam", "steps": 26, "tol": 0.01, **SHALLOW, "style_layer_weights": [1, 2, 3]},
        {"optimizer": "adam", "init_image": True, "preserve_color": "histogram", "steps": 3, **SHALLOW}],
}


@pytest.mark.parametrize("pooling", ["max", "avg"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_engine_creates_no_tensor_without_a_device(feats, avg_feats, images, case, pooling):
    net = feats if pooling == "max" else avg_feats
    contents, style = images
    jobs = CASES[case]
    with strict_devices():
        strict = stylize_batch(net, _specs(net, contents, style, jobs), Precision())
    normal = stylize_batch(net, _specs(net, contents, style, jobs), Precision())
    for got, want, j in zip(strict, normal, jobs):
        assert not isinstance(got, Exception), got
        assert got.image.device.type == "cpu" and got.image.shape == (1, 3, 26, 32)
        assert got.steps == want.steps
        assert torch.isfinite(got.image).all() and got.losses["total"] > 0
        # The mode only checks placement: the numbers are those of a plain run.
        assert torch.allclose(got.image, want.image, atol=1e-6)
        assert got.losses == pytest.approx(want.losses, rel=1e-6)
        if j.get("tv_weight"):
            assert "tv" in got.losses


def test_pixel_and_loss_helpers_under_strict_devices(images):
    contents, style = images
    with strict_devices():
        matched = pixels.match_color(style, contents[0])
        grey = pixels.match_luminance(style, contents[0])
        combined = pixels.combine_luminance(contents[1], contents[0])
        blended = losses.blend_grams([{"a": torch.ones(1, 2, 2, device="cpu")},
                                      {"a": torch.zeros(1, 2, 2, device="cpu")}], [3.0, 1.0])
    assert matched.device.type == grey.device.type == combined.device.type == "cpu"
    # Histogram matching gives the style the content's mean colour.
    assert torch.allclose(matched.mean((2, 3)), contents[0].mean((2, 3)), atol=0.02)
    assert torch.allclose(blended["a"], torch.full((1, 2, 2), 0.75))


def test_strict_devices_catches_a_tensor_made_without_a_device():
    """The mode is not vacuous: the old `match_color` line fails under it, a placed tensor passes."""
    cov = torch.eye(3, dtype=torch.float64, device="cpu")
    code = compile("cov + 1e-5 * torch.eye(3, dtype=cov.dtype)", PACKAGE + "/engine/pixels.py", "eval")
    with strict_devices():
        with pytest.raises(AssertionError, match=r"torch\.eye without device= at .*/pipeline/engine/pixels\.py"):
            eval(code, {"torch": torch, "cov": cov})
        # Outside pipeline/ the factory is allowed, and the meta default still refuses to mix.
        with pytest.raises(RuntimeError, match="meta"):
            cov + torch.eye(3, dtype=cov.dtype)
        placed = eval(compile("cov + torch.eye(3, dtype=cov.dtype, device=cov.device)",
                              PACKAGE + "/engine/pixels.py", "eval"), {"torch": torch, "cov": cov})
    assert placed.device.type == "cpu"

"""The tiled objective equals the untiled one: loss and gradient, max and avg pooling, with TV.

320 × 240 px in tiles of 128 px with the paper's layers: six tiles whose edges cut the image
in both directions, so every halo and pooling-grid rule is exercised. Max pooling without TV
and average pooling with it: TV is a pixel-space term, the same for either pooling.
"""
from __future__ import annotations

import pytest
import torch

from pipeline.engine.features import VGGFeatures
from pipeline.engine.objective import Objective, style_grams
from pipeline.engine import tile_grid, tiled
from pipeline.params import Params

from conftest import tiled_scene

H, W, TILE = 240, 320, 128


def _inputs():
    content, images, styles = tiled_scene(H, W)
    return content, images, styles[0]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


def test_halo_and_grid_follow_the_layers():
    # conv5_1: 5 positions of 16 px from a tile's edge are corrupt; conv1_1 one pixel.
    assert [tiled.edge_reach(n) for n in ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv4_2", "conv5_1")] \
        == [1, 4, 12, 32, 40, 80]
    assert tiled.halo(Params().style_layers) == 80 and tiled.grid(Params().style_layers) == 16
    assert tiled.halo(("conv1_1", "conv3_1")) == 12 and tiled.grid(("conv1_1", "conv3_1")) == 4
    tiles = tiled.split(H, W, TILE, ("conv5_1",))
    assert [t.core for t in tiles][:3] == [(0, 128, 0, 128), (0, 128, 128, 256), (0, 128, 256, 320)]
    assert tiles[4].crop == (48, 240, 48, 320)


@pytest.mark.parametrize("pooling, tv", [("max", 0.0), ("avg", 5.0)])
def test_tiled_loss_and_gradient_equal_untiled(pooling, tv):
    params = [Params(pooling=pooling, tv_weight=tv)]
    feats = VGGFeatures(pooling=pooling, layers=[*params[0].style_layers, *params[0].content_layers])
    content, images, style = _inputs()
    targets = style_grams(feats, style, params[0].style_layers)
    with torch.no_grad():
        content_targets = feats(content, list(params[0].content_layers))
    tiled_targets = tiled.tiled_features(feats, content, params[0].content_layers, TILE)
    whole_grams = style_grams(feats, content, params[0].style_layers)       # the style target path
    for name, value in tiled.tiled_grams(feats, content, params[0].style_layers, TILE).items():
        assert _rel(value, whole_grams[name]) < 1e-5, name
    for name, value in content_targets.items():
        assert torch.allclose(tiled_targets[name], value, rtol=1e-5, atol=1e-5)

    whole = Objective(feats, content_targets, [targets], params)
    total, parts, grad = whole.value_and_grad(images)
    cut = tiled.TiledObjective(feats, content_targets, [targets], params, TILE)
    t_total, t_parts, t_grad = cut.value_and_grad(images)

    assert set(t_parts) == set(parts) == {"content", "style", "total"} | ({"tv"} if tv else set())
    for key in parts:
        assert torch.allclose(t_parts[key], parts[key], rtol=1e-4, atol=0), key
    if tv:
        assert float(parts["tv"]) > 0
    assert _rel(t_grad, grad) < 1e-4
    # The no-autograd evaluation (used for final losses) agrees too.
    with torch.no_grad():
        again, _ = cut(images)
    assert torch.allclose(again, total, rtol=1e-4, atol=0)


def test_a_halo_too_narrow_breaks_exactness(monkeypatch):
    """The check above is sensitive: with half the halo the gradient is visibly wrong."""
    p = Params(style_layers=("conv1_1", "conv3_1"), content_layers=("conv3_1",))
    feats = VGGFeatures(layers=["conv3_1"])
    content, images, style = _inputs()
    targets = style_grams(feats, style, p.style_layers)
    with torch.no_grad():
        content_targets = feats(content[:1], ["conv3_1"])
    _, _, grad = Objective(feats, content_targets, targets, p).value_and_grad(images[:1])
    _, _, good = tiled.TiledObjective(feats, content_targets, targets, p, 64).value_and_grad(images[:1])
    assert _rel(good, grad) < 1e-4
    monkeypatch.setattr(tile_grid, "halo", lambda layers: 4)
    _, _, bad = tiled.TiledObjective(feats, content_targets, targets, p, 64).value_and_grad(images[:1])
    assert _rel(bad, grad) > 1e-3


def test_stylize_in_tiles_follows_the_same_path(feats):
    """Through the optimizer: three L-BFGS steps in tiles give the untiled run's image and losses."""
    from pipeline.engine.optimize import JobInput, stylize_batch

    gen = torch.Generator().manual_seed(1)
    content = torch.rand(1, 3, 128, 160, generator=gen)
    style = torch.rand(1, 3, 64, 64, generator=gen)
    p = Params(size=160, steps=3, multiscale=1, style_layers=("conv1_1", "conv2_1", "conv3_1"), content_layers=("conv3_1",))
    targets = style_grams(feats, style, p.style_layers)
    runs = [stylize_batch(feats, [JobInput(content, lambda side: targets, p, tiles=tiles, lbfgs_history=5)])[0]
            for tiles in ((), (48,))]
    assert runs[0].steps == runs[1].steps == 3
    assert torch.allclose(runs[1].image, runs[0].image, atol=1e-4)
    assert runs[1].losses["total"] == pytest.approx(runs[0].losses["total"], rel=1e-4)

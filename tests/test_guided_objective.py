"""Guided Gram matrices (Gatys et al. 2017): against a direct computation, tiled = untiled.

The objective's region interface: a job's style may be regions, each with a soft mask, its
own targets and a weight; a region covering everything is the plain objective.
"""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import style_loss, tiled
from pipeline.engine.features import VGGFeatures
from pipeline.engine.guidance import layer_guides
from pipeline.engine.objective import Objective, style_grams
from pipeline.engine.style_loss import StyleRegion
from pipeline.params import Params

from conftest import tiled_scene

H, W, TILE = 240, 320, 128


def _images():
    return tiled_scene(H, W)


def _soft_halves(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A left/right split feathered over 40 px: soft weights in between, summing to one."""
    x = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w)
    left = ((0.6 - x) / (40 / w)).clamp(0, 1)
    return left, 1 - left


def test_guided_gram_equals_a_direct_computation(feats):
    gen = torch.Generator().manual_seed(3)
    image = torch.rand(1, 3, 64, 48, generator=gen)
    mask = torch.rand(1, 1, 64, 48, generator=gen)
    layers = ("conv1_1", "conv2_1", "conv3_1")
    got = style_loss.style_targets(feats, image, layers, "gram", mask=mask)
    acts = feats(image, list(layers))
    for n in layers:
        f = acts[n][0].flatten(1).double()                          # (C, N)
        stride = {"conv1_1": 1, "conv2_1": 2, "conv3_1": 4}[n]
        g = torch.nn.functional.avg_pool2d(mask.double(), stride, stride).flatten() if stride > 1 \
            else mask.double().flatten()
        direct = (f * g) @ f.T / g.sum()                         # Σ_n g_n f_n f_nᵀ / Σ_n g_n
        assert float((got[n][0].double() - direct).norm() / direct.norm()) < 1e-5, n
    # A mask of ones is the plain Gram, exactly as the unguided path computes it.
    ones = style_loss.style_targets(feats, image, layers, "gram", mask=torch.ones(1, 1, 64, 48))
    plain = style_grams(feats, image, layers)
    for n in layers:
        assert float((ones[n] - plain[n]).norm() / plain[n].norm()) < 1e-6, n


def test_guidance_has_each_feature_maps_shape(feats):
    image = torch.rand(1, 3, 77, 93)
    layers = Params().style_layers
    acts = feats(image, list(layers))
    guides = layer_guides(torch.ones(1, 1, 77, 93), layers)
    for n in layers:
        assert guides[n].shape[-2:] == acts[n].shape[-2:], n


def test_one_region_everywhere_is_the_plain_objective(feats):
    p = Params()
    content, images, styles = _images()
    targets = style_grams(feats, styles[0], p.style_layers)
    with torch.no_grad():
        content_targets = feats(content, list(p.content_layers))
    plain, _ = Objective(feats, content_targets, [targets], [p])(images)
    region, _ = Objective(feats, content_targets, [[StyleRegion(targets, torch.ones(1, 1, 30, 40))]], [p])(images)
    assert torch.allclose(region, plain, rtol=1e-5)


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_tiled_equals_untiled_with_regions(pooling):
    """Two soft regions with their own styles, a third job without regions and a content weight
    map, in one batch: the tiled loss and gradient equal the untiled ones within 1e-4."""
    p = Params(pooling=pooling)
    feats = VGGFeatures(pooling=pooling, layers=[*p.style_layers, *p.content_layers])
    content, images, styles = _images()
    left, right = _soft_halves(H, W)
    # A style mask on the second painting: only its top half is used.
    top = torch.zeros(1, 1, 80, 112)
    top[..., :40, :] = 1
    a = style_grams(feats, styles[0], p.style_layers)
    b = style_loss.style_targets(feats, styles[1], p.style_layers, "gram", mask=top)
    # Masks are given at another size than the stage's: the objective resizes them.
    regions = [[StyleRegion(a, left[..., ::2, ::2].contiguous()), StyleRegion(b, right, weight=2.0)],
               [StyleRegion(b)]]
    maps = [None, 1 + 4 * left]
    with torch.no_grad():
        content_targets = feats(torch.cat([content, content]), list(p.content_layers))
    x = torch.cat([images, images.flip(-1)])
    # The first job keeps a feathered strip as photo (a pixel-space term, whole-image in tiles too).
    photo = (torch.cat([content, content]), [left * right * 4, None])
    whole = Objective(feats, content_targets, regions, [p, p], content_weight_maps=maps, photo=photo)
    total, parts, grad = whole.value_and_grad(x)
    assert float(parts["photo"][0]) > 0 and float(parts["photo"][1]) == 0
    cut = tiled.TiledObjective(feats, content_targets, regions, [p, p], TILE, content_weight_maps=maps,
                               photo=photo)
    t_total, t_parts, t_grad = cut.value_and_grad(x)
    for key in parts:
        assert torch.allclose(t_parts[key], parts[key], rtol=1e-4, atol=0), key
    assert float((t_grad - grad).norm() / grad.norm()) < 1e-4
    with torch.no_grad():
        again, _ = cut(x)
    assert torch.allclose(again, total, rtol=1e-4)
    # The regions matter: the same job with its styles swapped has another loss.
    swapped = Objective(feats, content_targets, [[StyleRegion(b, left), StyleRegion(a, right, weight=2.0)],
                                                 [StyleRegion(b)]], [p, p], content_weight_maps=maps,
                        photo=photo)(x)[0]
    assert abs(float(swapped[0] - total[0])) > 1e-3 * float(total[0])
    # keep() keeps each job's own regions: the second job alone has its loss from the batch.
    alone = whole.keep(torch.tensor([1]))(x[1:])[0]
    assert torch.allclose(alone, total[1:], rtol=1e-5)


def test_tiled_style_targets_with_a_mask_equal_untiled(feats):
    gen = torch.Generator().manual_seed(5)
    image = torch.rand(1, 3, 200, 260, generator=gen)
    mask = torch.rand(1, 1, 200, 260, generator=gen)
    layers = Params().style_layers
    whole = style_loss.style_targets(feats, image, layers, "gram", mask=mask)
    cut = tiled.tiled_targets(feats, image, layers, 96, "gram", mask=mask)
    for n in layers:
        assert float((cut[n] - whole[n]).norm() / whole[n].norm()) < 1e-5, n

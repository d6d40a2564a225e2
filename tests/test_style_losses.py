"""The meancov and sliced style losses: against direct computations, tiling, blends, regions,
batching and a short optimization."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.engine import sliced, style_loss, tiled
from pipeline.engine.distribution_losses import MeanCovLoss, SlicedLoss, sqrtm_newton_schulz
from pipeline.engine.objective import Objective
from pipeline.engine.optimize import JobInput, stylize_batch
from pipeline.engine.style_loss import StyleRegion
from pipeline.errors import ParamError
from pipeline.params import Params, params_from_mapping

LAYERS = ("conv1_1", "conv2_1", "conv3_1", "conv4_1", "conv5_1")


def _sqrtm(a: np.ndarray) -> np.ndarray:
    vals, vecs = np.linalg.eigh(a)
    return (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T


def _direct_w2(x: np.ndarray, y: np.ndarray, ridge: float) -> float:
    """W2² between the Gaussians of two sample sets (C, N), both covariances + ridge·I."""
    mx, my = x.mean(1), y.mean(1)
    cx = x @ x.T / x.shape[1] - np.outer(mx, mx) + ridge * np.eye(len(mx))
    cy = y @ y.T / y.shape[1] - np.outer(my, my) + ridge * np.eye(len(my))
    ry = _sqrtm(cy)
    return float(((mx - my) ** 2).sum() + np.trace(cx + cy - 2 * _sqrtm(ry @ cx @ ry)))


def test_meancov_equals_a_direct_w2_computation():
    gen = torch.Generator().manual_seed(0)
    kind = MeanCovLoss()
    c = 6
    mix = torch.randn(c, c, generator=gen, dtype=torch.float64)
    x = (mix @ torch.randn(1, c, 300, generator=gen, dtype=torch.float64)) + 1.0
    y = 2.0 * torch.randn(1, c, 200, generator=gen, dtype=torch.float64) - 0.5
    target = kind.stack([kind.target(y)])
    got = float(kind.loss(x, None, torch.tensor([300.0], dtype=torch.float64), target))
    scale = float((y ** 2).sum(1).mean())             # E‖fs‖²
    ridge = 1e-4 * scale / c
    want = _direct_w2(x[0].numpy(), y[0].numpy(), ridge) / scale
    assert got == pytest.approx(want, rel=1e-8)
    assert want > 0.1
    # Its own target is at distance ~0.
    assert abs(float(kind.loss(y, None, torch.tensor([200.0], dtype=torch.float64), target))) < 1e-10


def test_newton_schulz_square_root_matches_the_eigendecomposition():
    gen = torch.Generator().manual_seed(1)
    for c in (64, 512):
        f = torch.relu(torch.randn(1, c, 2 * c, generator=gen, dtype=torch.float64))
        a = f @ f.transpose(1, 2) / (2 * c) + 1e-4 * torch.eye(c, dtype=torch.float64)
        exact = torch.from_numpy(_sqrtm(a[0].numpy()))
        assert float((sqrtm_newton_schulz(a)[0] - exact).norm() / exact.norm()) < 1e-6


def test_meancov_gradient_by_gradcheck():
    gen = torch.Generator().manual_seed(2)
    kind = MeanCovLoss()
    y = torch.randn(1, 4, 30, generator=gen, dtype=torch.float64)
    target = kind.stack([kind.target(y)])
    x = torch.randn(1, 4, 20, generator=gen, dtype=torch.float64, requires_grad=True)
    g = torch.rand(1, 1, 20, generator=gen, dtype=torch.float64)
    fn = lambda f: kind.loss(f, g, g.flatten(1).sum(1), target)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x,), eps=1e-6, atol=1e-6)


def test_sliced_equals_the_exact_1d_distance_with_one_projection():
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 50, 3, generator=gen, dtype=torch.float64)
    y = torch.randn(2, 50, 3, generator=gen, dtype=torch.float64) * 2 + 1
    proj = sliced.projections(3, 1, seed=7, dtype=torch.float64)
    got = sliced.sliced_wasserstein(x, y, proj)
    px, py = (x @ proj)[..., 0], (y @ proj)[..., 0]
    want = (px.sort(-1).values - py.sort(-1).values).pow(2).mean(-1)
    assert torch.allclose(got, want, rtol=1e-12)
    # And the loss kind, at equal sizes, is that distance over its scale.
    kind = SlicedLoss()
    target = kind.stack([kind.target(y[:1].transpose(1, 2))])
    assert int(target["count"][0]) == 50


def _images(h=64, w=80, seed=0):
    gen = torch.Generator().manual_seed(seed)
    content = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=gen), (h, w),
                                              mode="bilinear")
    styles = [torch.rand(1, 3, 48, 48, generator=gen), torch.rand(1, 3, 40, 56, generator=gen)]
    return content, styles


def test_tiled_equals_untiled_for_meancov_and_sliced_is_refused(feats):
    p = Params(style_loss="meancov")
    h, w = 240, 320
    content, styles = _images(h, w)
    a = style_loss.style_targets(feats, styles[0], p.style_layers, "meancov")
    b = style_loss.style_targets(feats, styles[1], p.style_layers, "meancov")
    mask = torch.linspace(0, 1, w).view(1, 1, 1, w).expand(1, 1, h, w).contiguous()
    regions = [[StyleRegion(a, mask), StyleRegion(b, 1 - mask, weight=2.0)], [StyleRegion(style_loss.blend([a, b], [1, 3], "meancov"))]]
    with torch.no_grad():
        ct = feats(torch.cat([content, content]), list(p.content_layers))
    x = torch.cat([content, content.flip(-1)]).clamp(0, 1)
    total, parts, grad = Objective(feats, ct, regions, [p, p]).value_and_grad(x)
    t_total, t_parts, t_grad = tiled.TiledObjective(feats, ct, regions, [p, p], 128).value_and_grad(x)
    assert torch.allclose(t_parts["style"], parts["style"], rtol=1e-4, atol=0)
    assert float((t_grad - grad).norm() / grad.norm()) < 1e-4
    # Tiled style targets equal untiled ones.
    big = torch.rand(1, 3, 200, 260)
    whole = style_loss.style_targets(feats, big, p.style_layers, "meancov")
    cut = tiled.tiled_targets(feats, big, p.style_layers, 96, "meancov")
    for k in whole:
        assert float((cut[k] - whole[k]).norm() / whole[k].norm()) < 1e-4, k
    s = Params(style_loss="sliced")
    st = style_loss.style_targets(feats, styles[0], s.style_layers, "sliced")
    with pytest.raises(ParamError) as err:
        tiled.TiledObjective(feats, ct, [st, st], [s, s], 128)
    assert "\n" not in str(err.value) and "sliced" in str(err.value) and "sorts" in str(err.value)
    with pytest.raises(ParamError, match="cannot run in tiles"):
        tiled.tiled_targets(feats, big, s.style_layers, 96, "sliced")


@pytest.mark.parametrize("loss", ["meancov", "sliced"])
def test_blends_regions_and_batching(feats, loss):
    """A batch of mixed jobs (a blend, two regions, a plain one, other seeds) runs and lowers
    each style loss; for sliced the batched losses equal each job's alone (same projections)."""
    content, styles = _images(48, 64)
    base = params_from_mapping({"size": 64, "steps": 6, "style_loss": loss, "multiscale": 1})
    a = lambda side: style_loss.style_targets(feats, styles[0], base.style_layers, loss)  # noqa: E731
    blend = lambda side: style_loss.blend([a(side), style_loss.style_targets(  # noqa: E731
        feats, styles[1], base.style_layers, loss)], [1, 2], loss)
    left = (torch.arange(64).view(1, 1, 1, 64) < 32).float().expand(1, 1, 48, 64)
    regions = lambda side: [StyleRegion(a(side), left), StyleRegion(blend(side), 1 - left)]  # noqa: E731
    specs = [JobInput(content, a, base), JobInput(content, blend, base.replace(seed=5)),
             JobInput(content, regions, base.replace(seed=9, style_weight=100.0))]
    together = stylize_batch(feats, specs)
    for spec, res in zip(specs, together):
        assert res.loss_history["style"][-1] < 0.8 * res.loss_history["style"][0]
        if loss == "sliced":
            alone = stylize_batch(feats, [spec])[0]
            assert alone.loss_history["style"][:3] == pytest.approx(res.loss_history["style"][:3], rel=1e-4)


def test_sliced_projections_are_redrawn_and_deterministic(feats):
    content, styles = _images(48, 64)
    p = Params(style_loss="sliced")
    st = style_loss.style_targets(feats, styles[0], p.style_layers, "sliced")
    with torch.no_grad():
        ct = feats(content, list(p.content_layers))
    first = Objective(feats, ct, [st], [p])
    second = Objective(feats, ct, [st], [p])
    runs = [[float(o(content)[1]["style"]) for _ in range(3)] for o in (first, second)]
    assert runs[0] == runs[1]                  # deterministic given the seed
    assert len(set(runs[0])) == 3              # new projections each evaluation
    other = Objective(feats, ct, [st], [p.replace(seed=1)])
    assert float(other(content)[1]["style"]) != runs[0][0]


def test_sliced_targets_are_bounded_and_weighted(feats):
    from pipeline.engine import distribution_losses as dl

    image = torch.rand(1, 3, 96, 96)
    mask = torch.zeros(1, 1, 96, 96)
    mask[..., :, :48] = 1.0
    t = style_loss.style_targets(feats, image, ("conv1_1", "conv2_1"), "sliced", mask=mask)
    assert t["conv1_1"].shape == (1, dl.SLICED_POSITIONS, 64)        # 96·48 positions, sampled
    assert t["conv2_1"].shape[1] == 48 * 24                          # only the masked half
    assert float(t["conv2_1.weight"].sum()) == pytest.approx(1.0)
    again = style_loss.style_targets(feats, image, ("conv1_1", "conv2_1"), "sliced", mask=mask)
    assert torch.equal(t["conv1_1"], again["conv1_1"])

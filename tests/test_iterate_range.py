"""Every iterate stays in [0, 1], so the saved image is the image optimized.

The optimizers project x into the box after every step; L-BFGS then stores the step actually
taken. Checked on quadratics in float64 (exact pairs) and on tiny stylizations with a spy on
the objective (every image the network is shown).
"""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import optimize, pixels
from pipeline.engine.optimize import JobInput, stylize_batch
from pipeline.engine.optimizers import BatchAdam, BatchLBFGS
from pipeline.imaging import read_image
from pipeline.params import params_from_mapping

from conftest import make_content, make_style

BOX = (0.0, 1.0)
# Per sample f(x) = ½ (x − c)ᵀ A (x − c): the minimum c lies partly outside the box, so the
# projection is active from the first steps on.
A = torch.stack([torch.diag(torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)),
                 torch.diag(torch.tensor([0.3, 1.0, 4.0, 1.5], dtype=torch.float64))])
CENTRE = torch.tensor([[1.6, 0.5, -0.7, 0.2], [0.4, 2.0, 0.9, -1.0]], dtype=torch.float64)
START = torch.full((2, 4), 0.5, dtype=torch.float64)


def f(x: torch.Tensor) -> torch.Tensor:
    d = x - CENTRE
    return 0.5 * torch.einsum("bi,bij,bj->b", d, A, d)


def grad(x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("bij,bj->bi", A, x - CENTRE)


def test_project_step_keeps_x_in_the_box_and_the_step_is_the_one_taken():
    from pipeline.engine.optimizers import project_step

    x = torch.tensor([[0.2, 0.9, 0.5, 0.0]], dtype=torch.float64)
    step = torch.tensor([[0.1, 0.3, -0.7, -0.1]])
    step = step.to(torch.float64)
    old, want = x.clone(), (x + step).clamp(*BOX)
    unclamped = step.clone()
    project_step(x, step, BOX)
    assert torch.equal(x, want)
    assert torch.allclose(step, x - old, atol=1e-15)
    # Where nothing was clamped the step is untouched, bit for bit.
    assert step[0, 0] == unclamped[0, 0]
    scratch = torch.empty_like(x)
    x2, step2 = old.clone(), unclamped.clone()
    project_step(x2, step2, BOX, scratch)
    assert torch.equal(x2, x) and torch.equal(step2, step)


def test_projected_lbfgs_stays_in_the_box_lowers_the_loss_and_stores_true_secant_pairs():
    x = START.clone()
    opt = BatchLBFGS(2, 4, lr=1.0, history=5, dtype=torch.float64, bounds=BOX)
    seen, losses = [x.clone()], [f(x)]
    for _ in range(12):
        opt.step(x, grad(x))
        seen.append(x.clone())
        losses.append(f(x))
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # The box optimum: clamp(c) for a diagonal A. The loss falls to it.
    best = f(CENTRE.clamp(*BOX))
    assert torch.all(losses[-1] < losses[0])
    assert torch.allclose(losses[-1], best, atol=1e-6)
    # Some pixels were clamped on the way (the test exercises the projection).
    assert (x == 0).any() and (x == 1).any()
    # Every kept pair: s = a step actually taken between two iterates, y = A s, sᵀy > 0.
    steps = [seen[k + 1] - seen[k] for k in range(len(seen) - 1)]
    for sample in range(2):
        count = int(opt.count[sample])
        assert count >= 2
        for age in range(min(count, opt.m)):
            slot = (count - 1 - age) % opt.m
            s, y = opt.s[slot, sample], opt.y[slot, sample]
            assert float(s @ y) > 0
            assert torch.allclose(y, A[sample] @ s, atol=1e-12)
            assert any(torch.allclose(s, taken[sample], atol=1e-15) for taken in steps)


def test_unprojected_step_would_leave_the_box():
    # The construction matters: without bounds the same run leaves [0, 1].
    x = START.clone()
    opt = BatchLBFGS(2, 4, lr=1.0, history=5, dtype=torch.float64)
    for _ in range(12):
        opt.step(x, grad(x))
    assert float(x.min()) < -0.1 and float(x.max()) > 1.1


def test_projected_adam_stays_in_the_box_and_lowers_the_loss():
    x = START.clone()
    opt = BatchAdam(2, 4, lr=0.1, dtype=torch.float64, bounds=BOX)
    first = f(x)
    for _ in range(100):
        opt.step(x, grad(x))
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert torch.all(f(x) < first)
    assert torch.allclose(x, CENTRE.clamp(*BOX), atol=0.05)


class _Spy:
    """Wraps an objective; records every image it evaluates (the optimizer's iterates)."""

    def __init__(self, inner, seen: list):
        self.inner, self.seen = inner, seen

    def value_and_grad(self, images, autocast):
        self.seen.append(images.detach().clone())
        return self.inner.value_and_grad(images, autocast)

    def __call__(self, images):
        return self.inner(images)

    def keep(self, index):
        return _Spy(self.inner.keep(index), self.seen)


@pytest.fixture
def spied(monkeypatch):
    seen: list[torch.Tensor] = []
    make = optimize.make_objective
    monkeypatch.setattr(optimize, "make_objective", lambda *a, **k: _Spy(make(*a, **k), seen))
    return seen


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = tmp_path_factory.mktemp("range-images")
    return (read_image(make_content(root / "c.png", size=(48, 40), seed=1)),
            read_image(make_style(root / "s.png", size=(40, 40), seed=2)))


def _spec(feats, images, **values) -> JobInput:
    from pipeline.engine.objective import style_grams

    content, style = images
    params = params_from_mapping({"size": 32, "steps": 12, "style_weight": 500.0, **values})
    return JobInput(content, lambda side: style_grams(feats, pixels.resize_long_side(style, side),
                                                      params.style_layers), params)


@pytest.mark.parametrize("values", [{}, {"optimizer": "adam", "lr": 0.2}, {"multiscale": 2, "init": "noise"}])
def test_every_evaluated_iterate_is_in_range(feats, images, spied, values):
    result = stylize_batch(feats, [_spec(feats, images, **values)])[0]
    assert len(spied) == result.steps == 12
    assert all(float(x.min()) >= 0.0 and float(x.max()) <= 1.0 for x in spied)
    # Not trivially: the optimization pushed pixels to the bounds.
    assert any(float(x.min()) == 0.0 or float(x.max()) == 1.0 for x in spied)


def test_the_saved_image_is_the_last_iterate_and_both_losses_are_recorded(feats, images, spied):
    result = stylize_batch(feats, [_spec(feats, images)])[0]
    assert torch.equal(result.image, spied[-1])
    assert set(result.iterate_losses) == set(result.losses) == {"total", "content", "style"}
    assert result.iterate_losses["total"] == result.loss_history["total"][-1]
    # The same image evaluated twice (with and without autograd): the same losses.
    for key, value in result.iterate_losses.items():
        assert result.losses[key] == pytest.approx(value, rel=1e-5, abs=1e-7)


def test_the_worker_records_the_last_iterates_losses(tmp_path):
    from pipeline.run.cache import StyleTargetCache
    from pipeline.run.jobs import make_job
    from pipeline.run.worker import JobRunner

    content, style = make_content(tmp_path / "c.png", seed=3), make_style(tmp_path / "s.png", seed=4)
    job = make_job(content, [(style, 1.0)], params_from_mapping({"size": 32, "steps": 6, "multiscale": 1}))
    record = JobRunner(torch.device("cpu"), StyleTargetCache(enabled=False), precision="fp32").run(
        job, tmp_path / "out.png", tmp_path / "out.json")
    assert set(record["loss_iterate"]) >= {"total", "content", "style"}
    assert record["loss_iterate"]["total"] == pytest.approx(record["loss_total"], rel=1e-5)
    import json

    assert json.loads((tmp_path / "out.json").read_text())["loss_iterate"] == record["loss_iterate"]

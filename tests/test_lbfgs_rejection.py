"""An iterate far uphill is rejected: the sample returns to its accepted iterate and retries.

f(x) = Σ log cosh(x) from x = 3: the first step's secant sees the flat tail (curvature 0.01),
so the second step overshoots to x ≈ −30, where the loss is 20× higher. With `judge` that
iterate is rejected and the same direction retried at half length until it is not.
"""
from __future__ import annotations

import math

import torch

from pipeline.engine.optimizers import GROWTH, BatchLBFGS, IterateAverage


def _f(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.log(torch.cosh(x)).sum(1), torch.tanh(x)


def _run(start: torch.Tensor, steps: int, judged: bool) -> tuple[list[torch.Tensor], list, BatchLBFGS]:
    x = start.clone()
    opt = BatchLBFGS(x.shape[0], x.shape[1], history=5, dtype=x.dtype)
    losses, verdicts = [], []
    for _ in range(steps):
        loss, grad = _f(x)
        losses.append(loss.clone())
        verdicts.append(opt.judge(loss) if judged else None)
        opt.step(x, grad.clone())
    return losses, verdicts, opt


def test_without_judge_the_step_overshoots():
    losses, _, _ = _run(torch.tensor([[3.0]], dtype=torch.float64), 3, judged=False)
    assert float(losses[2][0]) > 10 * float(losses[1][0])


def test_a_rejected_iterate_is_retried_shorter_and_accepted_losses_never_jump():
    losses, verdicts, _ = _run(torch.tensor([[3.0]], dtype=torch.float64), 30, judged=True)
    assert verdicts[0] is None and bool(verdicts[2][0])          # the overshoot is rejected
    accepted = [float(losses[0][0])] + [float(l[0]) for l, v in zip(losses[1:], verdicts[1:]) if not bool(v[0])]
    assert all(b <= GROWTH * a for a, b in zip(accepted, accepted[1:]))
    assert accepted[-1] < 1e-6                                   # and it still converges


def test_retry_returns_to_the_accepted_point_along_the_same_direction():
    start = torch.tensor([[3.0]], dtype=torch.float64)
    x = start.clone()
    opt = BatchLBFGS(1, 1, history=5, dtype=x.dtype)
    points = []
    for _ in range(4):
        points.append(x.clone())
        loss, grad = _f(x)
        opt.judge(loss)
        opt.step(x, grad.clone())
    x1, x2, x3 = float(points[1]), float(points[2]), float(points[3])
    assert math.isclose(x3 - x1, 0.5 * (x2 - x1), rel_tol=1e-12)   # half the rejected step from x1


def test_a_sample_that_is_never_rejected_follows_plain_lbfgs_exactly():
    start = torch.tensor([[0.3, -0.2], [3.0, 3.0]], dtype=torch.float64)
    judged, verdicts, _ = _run(start, 12, judged=True)
    assert any(bool(v[1]) for v in verdicts[1:]) and not any(bool(v[0]) for v in verdicts[1:])
    alone, _, _ = _run(start[:1], 12, judged=False)
    assert all(torch.equal(a[0], b[0]) for a, b in zip(judged, alone))


def test_stored_pairs_are_secant_pairs_of_evaluated_points():
    x = torch.tensor([[3.0, -2.5]], dtype=torch.float64)
    opt = BatchLBFGS(1, 2, history=20, dtype=x.dtype)
    points = []
    for _ in range(10):
        loss, grad = _f(x)
        points.append((x.clone(), grad.clone()))
        opt.judge(loss)
        opt.step(x, grad.clone())
    pairs = [(b[0] - a[0], b[1] - a[1]) for a in points for b in points]
    assert int(opt.count) >= 3
    for slot in range(int(opt.count)):
        s, y = opt.s[slot], opt.y[slot]
        assert any(torch.allclose(s, ds, atol=1e-12) and torch.allclose(y, dy, atol=1e-12) for ds, dy in pairs)


def test_the_average_skips_rejected_iterates():
    avg = IterateAverage(torch.zeros(2, 1), [0.5, 0.5])
    avg.update(torch.tensor([[1.0], [1.0]]))
    avg.update(torch.tensor([[100.0], [3.0]]), torch.tensor([True, False]))
    assert float(avg.image(0)) == 1.0
    assert math.isclose(float(avg.image(1)), (0.5 * 1.0 * 0.5 + 0.5 * 3.0) / 0.75, rel_tol=1e-6)

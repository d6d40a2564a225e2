"""The batched, sync-free optimizers against torch's own on the same problems."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine.optimizers import BatchAdam, BatchLBFGS


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    """Per-row generalized Rosenbrock: (B, N) -> (B,); curved, so the history matters."""
    return (100 * (x[:, 1:] - x[:, :-1] ** 2) ** 2 + (1 - x[:, :-1]) ** 2).sum(1)


def torch_lbfgs_path(x0: torch.Tensor, steps: int, history: int, lr: float = 1.0) -> list[torch.Tensor]:
    """Iterates of torch.optim.LBFGS (no line search), one per objective evaluation."""
    x = x0.clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=lr, max_iter=steps, max_eval=steps, tolerance_grad=-1.0,
                            tolerance_change=-1.0, history_size=history)
    seen: list[torch.Tensor] = []

    def closure():
        opt.zero_grad()
        loss = rosenbrock(x).sum()
        loss.backward()
        seen.append(x.detach().clone())
        return loss

    opt.step(closure)
    return seen + [x.detach().clone()]


def ours_path(x0: torch.Tensor, steps: int, history: int, lr: float = 1.0) -> list[torch.Tensor]:
    x = x0.clone()
    opt = BatchLBFGS(x.shape[0], x.shape[1], lr=lr, history=history, dtype=x.dtype)
    seen = []
    for step in range(steps):
        xg = x.clone().requires_grad_(True)
        rosenbrock(xg).sum().backward()
        seen.append(x.clone())
        if step < steps - 1:   # like torch: the last evaluation's gradient is not used
            opt.step(x, xg.grad)
    return seen + [x.clone()]


@pytest.mark.parametrize("history", [3, 100])
def test_one_sample_tracks_torch_lbfgs(history):
    torch.manual_seed(0)
    x0 = (torch.rand(1, 6, dtype=torch.float64) - 0.5) * 0.6
    theirs = torch_lbfgs_path(x0, 40, history, lr=0.25)
    ours = ours_path(x0, 40, history, lr=0.25)
    assert len(theirs) == len(ours) == 41
    for step, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10), f"diverged from torch at step {step}"
    assert rosenbrock(ours[-1]) < rosenbrock(ours[0])


def test_batch_equals_samples_run_alone():
    torch.manual_seed(1)
    x0 = (torch.rand(4, 8, dtype=torch.float64) - 0.5) * 0.6
    together = ours_path(x0, 30, 10, lr=0.2)[-1]
    assert not torch.equal(together, x0)
    for b in range(4):
        alone = ours_path(x0[b:b + 1], 30, 10, lr=0.2)[-1]
        assert torch.allclose(together[b:b + 1], alone, rtol=1e-10, atol=1e-12)


def test_dropping_a_finished_sample_leaves_the_others_unchanged():
    torch.manual_seed(2)
    x0 = (torch.rand(3, 5, dtype=torch.float64) - 0.5) * 0.6
    x = x0.clone()
    opt = BatchLBFGS(3, 5, lr=0.2, history=5, dtype=x.dtype)
    for step in range(25):
        if step == 10:                      # sample 1 reaches its budget and leaves
            keep = torch.tensor([0, 2])
            x = x[keep].clone()
            opt.keep(keep)
        xg = x.clone().requires_grad_(True)
        rosenbrock(xg).sum().backward()
        opt.step(x, xg.grad)
    expected = ours_path(x0[[0, 2]], 26, 5, lr=0.2)[-1]
    assert torch.allclose(x, expected, rtol=1e-10, atol=1e-12)


def test_rejected_curvature_pair_is_masked_per_sample():
    opt = BatchLBFGS(2, 3, lr=1.0, history=4, dtype=torch.float64)
    x = torch.zeros(2, 3, dtype=torch.float64)
    opt.step(x, torch.tensor([[1.0, 0, 0], [1.0, 0, 0]], dtype=torch.float64))
    # Sample 0 sees positive curvature, sample 1 a gradient that makes yᵀs < 0.
    opt.step(x, torch.tensor([[0.5, 0, 0], [2.0, 0, 0]], dtype=torch.float64))
    assert opt.rho[0, 0] > 0 and opt.rho[0, 1] == 0
    assert torch.equal(opt.s[0, 1], torch.zeros(3, dtype=torch.float64))
    assert torch.isfinite(x).all()


def test_batch_adam_matches_torch_adam():
    torch.manual_seed(3)
    x0 = torch.rand(2, 7, dtype=torch.float64)
    ref = x0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ref], lr=0.05)
    x = x0.clone()
    ours = BatchAdam(2, 7, lr=0.05, dtype=x.dtype)
    for _ in range(20):
        opt.zero_grad()
        rosenbrock(ref).sum().backward()
        opt.step()
        xg = x.clone().requires_grad_(True)
        rosenbrock(xg).sum().backward()
        ours.step(x, xg.grad)
    assert torch.allclose(x, ref.detach(), rtol=1e-10, atol=1e-12)


class _BigAllocations(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the new storages of at least `numel` elements that ops create."""

    def __init__(self, numel: int):
        super().__init__()
        self.numel, self.count = numel, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {t.untyped_storage().data_ptr() for t in torch.utils._pytree.tree_leaves((args, kwargs))
                  if isinstance(t, torch.Tensor)}
        out = func(*args, **kwargs)
        for t in torch.utils._pytree.tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.numel() >= self.numel and t.untyped_storage().data_ptr() not in inputs:
                self.count += 1
        return out


@pytest.mark.parametrize("kind", ["lbfgs", "adam"])
def test_a_step_allocates_one_image_sized_vector(kind):
    """At print sizes each image-sized temporary is ~145 MB per 12 MP image: the memory planner
    (run/memory.py) counts one per step besides the optimizer's state."""
    n = 4096
    opt = BatchLBFGS(2, n, lr=0.5, history=3) if kind == "lbfgs" else BatchAdam(2, n, lr=0.05)
    x = torch.rand(2, n)
    counts = []
    for step in range(6):
        xg = x.clone().requires_grad_(True)
        rosenbrock(xg).sum().backward()
        grad = xg.grad.clone()
        before = grad.clone()
        with _BigAllocations(n) as mode:
            opt.step(x, grad)
        counts.append(mode.count)
        assert torch.equal(grad, before), "step must not change the gradient it is given"
    assert max(counts) == 1, counts

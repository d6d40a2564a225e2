"""A curvature pair with yᵀs ≤ 1e-10 is skipped per sample, as torch.optim.LBFGS skips it.

The problems are quadratics, one per sample: on f(x) = ½ xᵀAx a step s gives y = As, so a
Hessian with a negative eigenvalue makes a chosen pair's yᵀs negative. Only a few steps are
compared, so float64 rounding stays near 1e-16 and the tolerances are tight.
"""
from __future__ import annotations

import torch

from pipeline.engine.optimizers import BatchLBFGS

HISTORY = 2
# Sample 0 curves down along its third axis: its first two pairs have yᵀs 0.71 and 0.75, its
# third and fourth are negative (rejected). Sample 1 is convex: every pair kept.
HESSIANS = torch.stack([torch.diag(torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)),
                        torch.diag(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))])
START = torch.tensor([[1.0, 1.0, 0.5], [1.0, 1.0, 0.5]], dtype=torch.float64)


def torch_run(sample: int, steps: int) -> tuple[list[torch.Tensor], dict]:
    """torch.optim.LBFGS (no line search) on one sample: its iterates x_0 … x_steps, its state.

    `steps` updates take `steps` + 1 evaluations (torch does not evaluate the last iterate)."""
    a = HESSIANS[sample]
    x = START[sample].clone().requires_grad_(True)
    opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, max_eval=steps + 1, tolerance_grad=-1.0,
                            tolerance_change=-1.0, history_size=HISTORY)
    seen: list[torch.Tensor] = []

    def closure():
        opt.zero_grad()
        loss = 0.5 * x @ a @ x
        loss.backward()
        seen.append(x.detach().clone())
        return loss

    opt.step(closure)
    assert len(seen) == steps
    return seen + [x.detach().clone()], opt.state[x]


def ours_run(steps: int) -> tuple[list[torch.Tensor], BatchLBFGS]:
    """BatchLBFGS on both samples in one batch: the iterates x_0 … x_steps and the optimizer."""
    x = START.clone()
    opt = BatchLBFGS(2, 3, lr=1.0, history=HISTORY, dtype=torch.float64)
    seen = [x.clone()]
    for _ in range(steps):
        opt.step(x, torch.einsum("bij,bj->bi", HESSIANS, x))
        seen.append(x.clone())
    return seen, opt


def history_of(opt: BatchLBFGS, sample: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The sample's kept pairs (s, y, rho), oldest first."""
    count = int(opt.count[sample])
    slots = [(count - 1 - age) % opt.m for age in reversed(range(min(count, opt.m)))]
    return [(opt.s[k, sample], opt.y[k, sample], opt.rho[k, sample]) for k in slots]


def close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a, b, rtol=1e-12, atol=1e-14)


def test_the_construction_rejects_in_one_sample_and_keeps_in_the_other():
    xs, _ = torch_run(0, 5)
    curvature = [float((xs[k + 1] - xs[k]) @ HESSIANS[0] @ (xs[k + 1] - xs[k])) for k in range(4)]
    assert curvature[0] > 0.5 and curvature[1] > 0.5 and curvature[2] < -0.1 and curvature[3] < -0.1
    xs, _ = torch_run(1, 5)
    assert all(float((xs[k + 1] - xs[k]) @ HESSIANS[1] @ (xs[k + 1] - xs[k])) > 0.01 for k in range(4))


def test_history_after_a_rejected_pair_equals_torch_per_sample():
    # Four steps offer three pairs; sample 0 rejects the third, sample 1 keeps it, at the same step.
    _, opt = ours_run(4)
    assert opt.count.tolist() == [2, 3]
    for sample in (0, 1):
        _, state = torch_run(sample, 4)
        ours = history_of(opt, sample)
        assert len(ours) == len(state["old_stps"]) == HISTORY
        for (s, y, rho), s_ref, y_ref, rho_ref in zip(ours, state["old_stps"], state["old_dirs"], state["ro"]):
            assert close(s, s_ref) and close(y, y_ref), f"sample {sample}: history differs from torch"
            assert abs(float(rho) - float(rho_ref)) <= 1e-12 * abs(float(rho_ref))
        assert abs(float(opt.h_diag[sample]) - float(state["H_diag"])) <= 1e-12 * abs(float(state["H_diag"]))
    # Sample 0 still holds its first pair (torch kept it); a neutral slot would have pushed it out.
    first_step = torch_run(0, 1)[0][1] - START[0]
    assert close(history_of(opt, 0)[0][0], first_step)


def test_steps_after_rejected_pairs_equal_torch_per_sample():
    # Steps 4 and 5 are taken with sample 0's history [pair 1, pair 2] (pairs 3 and 4 skipped)
    # and sample 1's [pair 2, pair 3], then [pair 3, pair 4].
    ours, _ = ours_run(5)
    for sample in (0, 1):
        theirs, _ = torch_run(sample, 5)
        for k, (a, b) in enumerate(zip(ours, theirs)):
            assert close(a[sample], b), f"sample {sample}: x_{k} differs from torch"


def test_a_sample_alone_equals_its_row_in_the_batch():
    ours, _ = ours_run(5)
    x = START[:1].clone()
    opt = BatchLBFGS(1, 3, lr=1.0, history=HISTORY, dtype=torch.float64)
    for _ in range(5):
        opt.step(x, x @ HESSIANS[0])
    assert torch.equal(x[0], ours[-1][0])

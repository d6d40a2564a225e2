"""Optimizers over a batch of independent problems, without host synchronization per step.

Each sample of the batch (one job) keeps its own L-BFGS history; the two-loop recursion runs
once for the whole batch with per-sample dot products, so a batch of B jobs costs the same
number of kernel launches as one. Nothing here calls `.item()`: the step length, the
curvature test and the history update are tensor ops, so a GPU never waits for the host.

`BatchLBFGS` follows `torch.optim.LBFGS` with `line_search_fn=None` step for step: the first
step is `lr · min(1, 1/‖g‖₁) · (−g)`, later steps `lr · (−H g)` with H from the last
`history` curvature pairs, a pair is kept only when yᵀs > 1e-10, and H₀ = (yᵀs / yᵀy) I from
the newest kept pair. Where a pair is rejected for one sample, that sample's slot holds a
neutral (masked) pair instead, so every sample's history stays aligned in one tensor.
"""
from __future__ import annotations

import torch

_CURVATURE_EPS = 1e-10


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample dot product of (B, N) tensors -> (B,), without an (B, N) temporary."""
    return torch.einsum("bn,bn->b", a, b)


class BatchLBFGS:
    """L-BFGS without line search on x (B, N); call `step(x, grad)` once per evaluation."""

    def __init__(self, batch: int, numel: int, *, lr: float = 1.0, history: int = 100,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.lr, self.m = lr, history
        self.s = torch.zeros(history, batch, numel, device=device, dtype=dtype)
        self.y = torch.zeros_like(self.s)
        self.rho = torch.zeros(history, batch, device=device, dtype=dtype)   # 0 marks an unused slot
        self.h_diag = torch.ones(batch, device=device, dtype=dtype)
        self.prev_grad: torch.Tensor | None = None
        self.prev_step: torch.Tensor | None = None
        self.count = 0          # slots written so far (the same for every sample)

    @torch.no_grad()
    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        """Update x (B, N) in place from its gradient at x (`grad` is kept, not copied: the
        caller must not change it afterwards).

        At print sizes every image-sized temporary is ~145 MB per 12 MP image, so the step
        works in place: besides its state (s, y, the previous gradient and step) it allocates
        one vector, the new step (run/memory.py counts on that)."""
        if self.prev_grad is None:
            # First iteration: steepest descent, scaled like torch's min(1, 1/|g|_1) · lr.
            t = self.lr * torch.clamp(1.0 / torch.linalg.vector_norm(grad, 1, dim=1), max=1.0)
            step = grad * (-t)[:, None]
        else:
            slot = self.count % self.m
            y, s = self.y[slot], self.s[slot]
            torch.sub(grad, self.prev_grad, out=y)
            s.copy_(self.prev_step)
            ys = _dot(y, s)
            keep = ys > _CURVATURE_EPS
            # A rejected pair becomes a neutral one (zeros, rho 0) so the batch stays aligned.
            y[~keep] = 0.0
            s[~keep] = 0.0
            self.rho[slot] = torch.where(keep, 1.0 / ys.clamp_min(_CURVATURE_EPS), torch.zeros_like(ys))
            self.h_diag = torch.where(keep, ys / _dot(y, y).clamp_min(1e-30), self.h_diag)
            self.count += 1
            step = self._two_loop(grad).mul_(-self.lr)
        x.add_(step)
        self.prev_grad, self.prev_step = grad, step

    def _two_loop(self, grad: torch.Tensor) -> torch.Tensor:
        """H·grad by the two-loop recursion, newest pair first; masked slots contribute nothing.
        One new (B, N) tensor: the updates are fused multiply-adds in place."""
        n = min(self.count, self.m)
        order = [(self.count - 1 - i) % self.m for i in range(n)]   # newest -> oldest
        q = grad.clone()
        alphas = []
        for i in order:
            alpha = self.rho[i] * _dot(self.s[i], q)
            q.addcmul_(self.y[i], alpha[:, None], value=-1.0)
            alphas.append(alpha)
        r = q.mul_(self.h_diag[:, None])
        for i, alpha in zip(reversed(order), reversed(alphas)):
            beta = self.rho[i] * _dot(self.y[i], r)
            r.addcmul_(self.s[i], (alpha - beta)[:, None])
        return r

    def keep(self, index: torch.Tensor) -> None:
        """Drop finished samples: keep only rows `index` (a LongTensor) of every state."""
        self.s, self.y = self.s[:, index], self.y[:, index]
        self.rho, self.h_diag = self.rho[:, index], self.h_diag[index]
        if self.prev_grad is not None:
            self.prev_grad, self.prev_step = self.prev_grad[index], self.prev_step[index]


class BatchAdam:
    """Adam on x (B, N); elementwise, so a batch is exactly B separate runs."""

    def __init__(self, batch: int, numel: int, *, lr: float = 0.02, betas=(0.9, 0.999), eps: float = 1e-8,
                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32):
        self.lr, self.betas, self.eps = lr, betas, eps
        self.m = torch.zeros(batch, numel, device=device, dtype=dtype)
        self.v = torch.zeros_like(self.m)
        self.t = 0

    @torch.no_grad()
    def step(self, x: torch.Tensor, grad: torch.Tensor) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m.mul_(b1).add_(grad, alpha=1 - b1)
        self.v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        # One image-sized temporary (the denominator), not five: see BatchLBFGS.step.
        denom = (self.v / (1 - b2 ** self.t)).sqrt_().add_(self.eps)
        x.addcdiv_(self.m, denom, value=-self.lr / (1 - b1 ** self.t))

    def keep(self, index: torch.Tensor) -> None:
        self.m, self.v = self.m[index], self.v[index]

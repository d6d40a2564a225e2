"""Two style losses beyond the paper's Gram matrices (the protocol: style_loss.py).

- `meancov`: each layer's features as a Gaussian (mean μ, covariance Σ), matched by the squared
  2-Wasserstein distance between Gaussians, ‖μ − μs‖² + tr(Σ + Σs − 2 (Σs^½ Σ Σs^½)^½)
  (as crowsonkb/style-transfer-pytorch does). Targets store the mean and the second moment
  E[f fᵀ], both linear in a mixture, so styles blend linearly; Σ = E[f fᵀ] − μ μᵀ. Σs^½ is
  exact (an eigendecomposition in float64, once per batch in `stack`); the square root that
  depends on the image runs NS_ITERATIONS coupled Newton–Schulz iterations, differentiated
  through (so the gradient is exactly that of the value computed). Tileable: μ and E[f fᵀ] are
  weighted sums over positions.
- `sliced`: the sliced Wasserstein distance (Heitz et al., CVPR 2021) between the output's and
  the style's feature sets, by engine/sliced.py: C random unit directions per layer (C the
  layer's channels), redrawn every evaluation from the job's seed, the evaluation count and
  the call's place in the objective, so a job's losses are the same alone or in any batch.
  Different numbers of output and style positions are matched by quantiles (sliced.py). Not
  tileable: a sort is over all positions at once.

Both are divided by the style target's own scale E‖fs‖² = tr(Σs) + ‖μs‖² (sliced: E‖fs‖²/C,
the expected squared projection on a random unit direction), so 1 means "as far from the style
as an all-zero feature map is", as the Gram loss's relative error does.
"""
from __future__ import annotations

import hashlib
from typing import Mapping, Sequence

import torch

from . import sliced
from .guidance import mass_of
from .losses import widen

_EPS = 1e-8
NS_ITERATIONS = 20     # docs/engine.md: error against an eigendecomposition at conv1_1…conv5_1
RIDGE = 1e-4           # δ = RIDGE × tr(Σs)/C added to both covariances: square roots stay well conditioned
SLICED_POSITIONS = 4096  # style positions kept per layer (seeded sample): a 512 px style keeps conv4_1/5_1 whole


def sqrtm_newton_schulz(a: torch.Tensor, iterations: int = NS_ITERATIONS) -> torch.Tensor:
    """Square roots of symmetric positive (semi)definite (B, C, C), by coupled Newton–Schulz:
    scaled by the Frobenius norm so every eigenvalue lies in (0, 1], where it converges."""
    norm = a.flatten(1).norm(dim=1).clamp_min(_EPS).view(-1, 1, 1)
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device).expand_as(a)
    y, z = a / norm, eye
    for _ in range(iterations):
        t = 0.5 * (3.0 * eye - z @ y)
        y, z = y @ t, t @ z
    return y * norm.sqrt()


def sqrtm_eig(a: torch.Tensor) -> torch.Tensor:
    """Exact symmetric square roots in float64 (no gradient needed: the targets')."""
    vals, vecs = torch.linalg.eigh(a.double())
    return (vecs * vals.clamp_min(0).sqrt().unsqueeze(-2)) @ vecs.transpose(-1, -2)


class MeanCovLoss:
    name = "meancov"
    tileable = True

    def moments(self, f: torch.Tensor, g: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """{"": Σ g f fᵀ (B, C, C), "mean": Σ g f (B, C)}."""
        f = widen(f)
        with torch.autocast(f.device.type, enabled=False):
            fg = f * g if g is not None else f
            return {"": torch.bmm(fg, f.transpose(1, 2)), "mean": fg.sum(-1)}

    def target_from_moments(self, m: Mapping[str, torch.Tensor], mass: torch.Tensor) -> dict[str, torch.Tensor]:
        mass = mass.clamp_min(_EPS)
        return {"": m[""] / mass.view(-1, 1, 1), "mean": m["mean"] / mass.view(-1, 1)}

    def target(self, f: torch.Tensor, g: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        return self.target_from_moments(self.moments(f, g), mass_of(f, g))

    def from_moments(self, m: Mapping[str, torch.Tensor], mass: torch.Tensor,
                     target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        own = self.target_from_moments(m, mass)
        mu, mu_s = own["mean"], target["mean"].to(own["mean"])
        cov = own[""] - mu.unsqueeze(2) * mu.unsqueeze(1)
        cov_s = target["cov"].to(cov)
        root_s = target["root"].to(cov)
        c = cov.shape[-1]
        ridge = (RIDGE * target["scale"].to(cov) / c).view(-1, 1, 1) * torch.eye(c, dtype=cov.dtype, device=cov.device)
        cov = cov + ridge
        cross = root_s @ cov @ root_s
        cross = 0.5 * (cross + cross.transpose(1, 2))
        root = sqrtm_newton_schulz(cross)
        trace = lambda x: x.diagonal(dim1=1, dim2=2).sum(-1)  # noqa: E731
        w2 = (mu - mu_s).pow(2).sum(-1) + trace(cov) + trace(cov_s) - 2.0 * trace(root)
        return w2 / (target["scale"].to(w2) + _EPS)

    def loss(self, f: torch.Tensor, g: torch.Tensor | None, mass: torch.Tensor,
             target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.from_moments(self.moments(f, g), mass, target)

    def blend(self, targets: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
              ) -> dict[str, torch.Tensor]:
        """The mixture's mean and second moment: weighted sums of the styles'."""
        return {key: sum(w * t[key] for t, w in zip(targets, weights)) for key in ("", "mean")}

    def stack(self, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """A batch, with what the loss derives from the stored parts: Σs (ridged), Σs^½, the scale."""
        second = torch.cat([t[""] for t in targets])
        mean = torch.cat([t["mean"] for t in targets])
        c = second.shape[-1]
        scale = second.diagonal(dim1=1, dim2=2).sum(-1)               # E‖f‖² = tr(Σs) + ‖μs‖²
        cov = second.double() - mean.double().unsqueeze(2) * mean.double().unsqueeze(1)
        cov = cov + (RIDGE * scale.double() / c).view(-1, 1, 1) * torch.eye(c, dtype=torch.float64, device=cov.device)
        return {"": second, "mean": mean, "cov": cov.to(second.dtype), "root": sqrtm_eig(cov).to(second.dtype),
                "scale": scale}

    def valid(self, tensors: Mapping[str, torch.Tensor], layers: Sequence[str]) -> bool:
        if set(tensors) != {k for n in layers for k in (n, n + ".mean")}:
            return False
        for n in layers:
            s, m = tensors[n], tensors[n + ".mean"]
            if not (s.dim() == 3 and s.shape[1] == s.shape[2] and m.dim() == 2 and m.shape[1] == s.shape[1]):
                return False
        return all(bool(torch.isfinite(t).all()) for t in tensors.values())


def _draw_seed(*parts: int) -> int:
    return int.from_bytes(hashlib.sha256(":".join(map(str, parts)).encode()).digest()[:7], "little")


class SlicedLoss:
    name = "sliced"
    tileable = False
    untileable = "the sliced Wasserstein distance sorts all positions at once"

    def __init__(self, seeds: Sequence[int] = (0,), evaluation: int = 0):
        self.seeds = list(seeds)       # per job of the objective
        self.evaluation = evaluation   # evaluations so far (advance() at each)
        self.call = 0                  # loss calls within this evaluation: slot-major, layer order

    # Per-objective state: a fresh instance per objective, restricted with the objective's jobs.
    def for_jobs(self, params: Sequence) -> "SlicedLoss":
        return SlicedLoss([p.seed for p in params])

    def keep(self, rows: Sequence[int]) -> "SlicedLoss":
        out = SlicedLoss([self.seeds[i] for i in rows], self.evaluation)
        out.call = self.call
        return out

    def advance(self) -> None:
        self.evaluation += 1
        self.call = 0

    def projections(self, channels: int, positions: int, device, dtype) -> torch.Tensor:
        """(C, P) when every job shares a seed, else (B, C, P): C directions per layer."""
        draws = {s: sliced.projections(channels, channels, _draw_seed(s, self.evaluation, self.call, positions),
                                       device, dtype) for s in dict.fromkeys(self.seeds)}
        if len(draws) == 1:
            return next(iter(draws.values()))
        return torch.stack([draws[s] for s in self.seeds])

    def loss(self, f: torch.Tensor, g: torch.Tensor | None, mass: torch.Tensor,
             target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        x = widen(f).transpose(1, 2)                    # (B, N, C)
        proj = self.projections(x.shape[-1], x.shape[1], x.device, x.dtype)
        self.call += 1
        wx = widen(g).flatten(1) if g is not None else None
        y, wy, counts = target[""].to(x), target["weight"].to(x), target["count"].tolist()
        out = []
        for b in range(x.shape[0]):   # one job at a time: its own style size, no padded knots
            k = int(counts[b])
            p = proj if proj.dim() == 2 else proj[b]
            out.append(sliced.sliced_wasserstein(x[b:b + 1], y[b:b + 1, :k], p,
                                                 wx[b:b + 1] if wx is not None else None, wy[b:b + 1, :k]))
        return torch.cat(out) / (target["scale"].to(x) + _EPS)

    def target(self, f: torch.Tensor, g: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """{"": positions (1, M, C), "weight": (1, M)}: positions of weight > 0, at most
        SLICED_POSITIONS of them (a seeded sample, the same for the same image)."""
        x = widen(f)[0].transpose(0, 1)
        w = widen(g).flatten()[: x.shape[0]] if g is not None else torch.ones(x.shape[0], dtype=x.dtype, device=x.device)
        keep = (w > 0).nonzero().flatten()
        if keep.numel() > SLICED_POSITIONS:
            gen = torch.Generator(device="cpu").manual_seed(keep.numel())
            keep = keep[torch.randperm(keep.numel(), generator=gen)[:SLICED_POSITIONS].sort().values.to(keep.device)]
        w = w[keep]
        return {"": x[keep].unsqueeze(0).contiguous(), "weight": (w / w.sum().clamp_min(_EPS)).unsqueeze(0)}

    def blend(self, targets: Sequence[Mapping[str, torch.Tensor]], weights: Sequence[float]
              ) -> dict[str, torch.Tensor]:
        """The mixture: all styles' positions, each style's weights scaled to its blend weight."""
        kept = [(t, w) for t, w in zip(targets, weights) if w > 0]
        return {"": torch.cat([t[""] for t, _ in kept], 1),
                "weight": torch.cat([t["weight"] / t["weight"].sum().clamp_min(_EPS) * w for t, w in kept], 1)}

    def stack(self, targets: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """Padded to the largest set with zero weight; `count` says how many are real (the loss
        uses only those: a padded knot would bend the quantile function)."""
        size = max(t[""].shape[1] for t in targets)
        pad = lambda v: torch.nn.functional.pad(v, (0, 0, 0, size - v.shape[1]) if v.dim() == 3  # noqa: E731
                                                else (0, size - v.shape[1]))
        feats = torch.cat([pad(t[""]) for t in targets])
        weight = torch.cat([pad(t["weight"]) for t in targets])
        scale = (feats.pow(2).sum(-1) * weight).sum(-1) / weight.sum(-1).clamp_min(_EPS) / feats.shape[-1]
        counts = torch.tensor([t[""].shape[1] for t in targets], device=feats.device)
        return {"": feats, "weight": weight, "count": counts, "scale": scale}

    def valid(self, tensors: Mapping[str, torch.Tensor], layers: Sequence[str]) -> bool:
        if set(tensors) != {k for n in layers for k in (n, n + ".weight")}:
            return False
        for n in layers:
            x, w = tensors[n], tensors[n + ".weight"]
            if not (x.dim() == 3 and w.dim() == 2 and w.shape[1] == x.shape[1] and x.shape[1] > 0):
                return False
        return all(bool(torch.isfinite(t).all()) for t in tensors.values())

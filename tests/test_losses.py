"""Closed forms of the Gram matrix and the three losses, on hand-made tensors."""
from __future__ import annotations

import pytest
import torch

from pipeline.engine import losses


def _features() -> torch.Tensor:
    # (B=2, C=2, H=2, W=2): small integers, so every expected value is exact.
    return torch.tensor([
        [[[1.0, 2.0], [3.0, 4.0]],
         [[0.0, 1.0], [0.0, -1.0]]],
        [[[2.0, 0.0], [0.0, 2.0]],
         [[1.0, 1.0], [1.0, 1.0]]],
    ])


def test_gram_equals_f_ft_over_positions_by_hand():
    g = losses.gram(_features())
    assert g.shape == (2, 2, 2)
    # Image 0: F = [[1,2,3,4],[0,1,0,-1]] -> F Fᵀ = [[30, -2], [-2, 2]], / (H·W = 4).
    assert torch.equal(g[0], torch.tensor([[30.0, -2.0], [-2.0, 2.0]]) / 4)
    # Image 1: F = [[2,0,0,2],[1,1,1,1]] -> F Fᵀ = [[8, 4], [4, 4]] / 4.
    assert torch.equal(g[1], torch.tensor([[2.0, 1.0], [1.0, 1.0]]))


def test_gram_is_symmetric_fp32_and_batch_independent():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, 6, generator=gen)
    g = losses.gram(x)
    assert g.dtype == torch.float32
    assert torch.allclose(g, g.transpose(1, 2), atol=1e-6)
    for i in range(3):
        alone = losses.gram(x[i:i + 1])[0]
        flat = x[i].reshape(5, -1)
        assert torch.allclose(alone, flat @ flat.T / 24, atol=1e-6)
        assert torch.allclose(g[i], alone, atol=1e-6)
    # Changing one image leaves the others' Grams alone.
    y = x.clone()
    y[1] += 1
    assert torch.equal(losses.gram(y)[0], g[0]) and torch.equal(losses.gram(y)[2], g[2])
    # Half precision in, fp32 out.
    assert losses.gram(x.half()).dtype == torch.float32


def test_content_loss_closed_form():
    target = torch.full((1, 2, 2, 2), 2.0)
    assert torch.equal(losses.content_loss(target.clone(), target), torch.zeros(1))
    feats = torch.stack([target[0], target[0] + 1.0])     # (2, 2, 2, 2): equal, then off by one
    # mean((F − P)²) / mean(P²) = 1 / 4 for the second image; the target broadcasts over the batch.
    out = losses.content_loss(feats, target)
    assert out.shape == (2,)
    assert torch.allclose(out, torch.tensor([0.0, 0.25]))


def test_style_layer_loss_closed_form():
    a = torch.tensor([[[2.0, 0.0], [0.0, 2.0]]])         # mean(A²) = 8 / 4 = 2
    assert torch.equal(losses.style_layer_loss(a.clone(), a), torch.zeros(1))
    g = torch.stack([a[0], a[0] + torch.tensor([[1.0, 0.0], [0.0, 0.0]])])
    # mean((G − A)²) = 1 / 4 for the second; / mean(A²) = 2 -> 0.125.
    assert torch.allclose(losses.style_layer_loss(g, a), torch.tensor([0.0, 0.125]))


def test_tv_loss_closed_form():
    flat = torch.full((1, 3, 4, 5), 0.3)
    assert torch.equal(losses.tv_loss(flat), torch.zeros(1))
    # A horizontal ramp 0, 1, 2, ... : every horizontal difference is 1, vertical ones are 0.
    ramp = torch.arange(5.0).expand(2, 3, 4, 5).clone()
    assert torch.allclose(losses.tv_loss(ramp), torch.ones(2))
    # Vertical steps of 2: (2)² = 4 per vertical pair, none horizontally.
    steps = (torch.arange(4.0) * 2).view(1, 1, 4, 1).expand(1, 3, 4, 5)
    assert torch.allclose(losses.tv_loss(steps), torch.tensor([4.0]))
    # A checkerboard of 0/1: every neighbour differs by 1 both ways -> 1 + 1.
    yy, xx = torch.meshgrid(torch.arange(4), torch.arange(5), indexing="ij")
    board = ((yy + xx) % 2).float().expand(1, 3, 4, 5)
    assert torch.allclose(losses.tv_loss(board), torch.tensor([2.0]))


def test_blend_grams_normalizes_weights():
    one = {"conv1_1": torch.ones(1, 2, 2), "conv2_1": torch.zeros(1, 3, 3)}
    two = {"conv1_1": torch.full((1, 2, 2), 4.0), "conv2_1": torch.full((1, 3, 3), 8.0)}
    out = losses.blend_grams([one, two], [3.0, 1.0])      # weights 0.75 / 0.25
    assert set(out) == {"conv1_1", "conv2_1"}
    assert torch.allclose(out["conv1_1"], torch.full((1, 2, 2), 0.75 + 1.0))
    assert torch.allclose(out["conv2_1"], torch.full((1, 3, 3), 2.0))
    # Scaling all weights changes nothing; one style is itself.
    again = losses.blend_grams([one, two], [30.0, 10.0])
    assert all(torch.allclose(out[k], again[k]) for k in out)
    alone = losses.blend_grams([two], [5.0])
    assert all(torch.allclose(alone[k], two[k]) for k in two)


@pytest.mark.parametrize("weights", [[0.0, 0.0], [1.0, -1.0]])
def test_blend_grams_refuses_weights_without_a_positive_sum(weights):
    one = {"conv1_1": torch.ones(1, 2, 2)}
    with pytest.raises(ValueError, match="positive sum"):
        losses.blend_grams([one, one], weights)

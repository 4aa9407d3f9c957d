"""DVE dense correlation loss: matches a reference-shaped loop, rewards the right correspondence."""

from __future__ import annotations

import pytest
import torch

from equinv.losses.dve import dve_loss, dve_loss_loop, grid_positions


@pytest.mark.parametrize("normalize", [True, False])
def test_vectorised_loss_equals_loop(normalize):
    g = torch.Generator().manual_seed(0)
    f1 = torch.randn(3, 6, 4, 5, generator=g, dtype=torch.float64)
    f2 = torch.randn(3, 6, 4, 5, generator=g, dtype=torch.float64)
    grid = torch.rand(3, 8, 10, 2, generator=g, dtype=torch.float64) * 9
    ref = dve_loss_loop(f1, f2, grid, normalize)
    assert torch.allclose(dve_loss(f1, f2, grid, normalize), ref, rtol=1e-10, atol=1e-12)
    assert torch.allclose(dve_loss(f1, f2, grid, normalize, chunk=2), ref, rtol=1e-10, atol=1e-12)


def test_loop_matches_explicit_formula():
    """Brute force over u, w, v with python loops on a 2x2 map, batch 2."""
    g = torch.Generator().manual_seed(1)
    b, c, h, w = 2, 3, 2, 2
    f1 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    f2 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    grid = torch.rand(b, 4, 4, 2, generator=g, dtype=torch.float64) * 4  # input 4x4, stride 2
    cells = [(i, j) for i in range(h) for j in range(w)]
    total = 0.0
    for bi in range(b):
        fa = f1[(bi + 1) % b]
        for (i, j) in cells:
            u = f1[bi, :, i, j]
            e = torch.stack([u @ fa[:, k, l] for (k, l) in cells]).softmax(0)
            fhat = sum(e[n] * fa[:, k, l] for n, (k, l) in enumerate(cells))
            p = torch.stack([fhat @ f2[bi, :, k, l] for (k, l) in cells]).softmax(0)
            gu = grid[bi, 2 * i, 2 * j]
            for n, (k, l) in enumerate(cells):
                v = torch.tensor([2.0 * l, 2.0 * k], dtype=torch.float64)
                total += (gu - v).norm() ** 0.5 * p[n]
    expect = total / (b * h * w)
    assert torch.allclose(dve_loss(f1, f2, grid, normalize_vectors=False), expect, rtol=1e-10)
    assert torch.allclose(dve_loss_loop(f1, f2, grid, normalize_vectors=False), expect, rtol=1e-10)


def _shift_grid(b: int, size: int, dx: int) -> torch.Tensor:
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    return torch.stack((xs + dx, ys), -1).expand(b, -1, -1, -1).clone()


def test_correct_correspondence_scores_lower_than_shuffled():
    """f2 = f1 shifted by one cell: the loss with the true grid is far below the loss with a shuffled grid.

    All images share the same (noisy) descriptors, so the auxiliary image holds the right ones too.
    """
    torch.manual_seed(0)
    b, c, h = 4, 32, 8
    base = torch.randn(1, c, h, h + 1) + 0.1 * torch.randn(b, c, h, h + 1)
    f1 = base[..., :h]  # view1 cell (i, j) ...
    f2 = base[..., 1:]  # ... is view2 cell (i, j - 1): g(u) = u - 1 cell = u - 2 input px
    grid = _shift_grid(b, 2 * h, -2)
    good = dve_loss(f1, f2, grid, normalize_vectors=True)
    perm = torch.randperm(2 * h * 2 * h)
    shuffled = grid.reshape(b, -1, 2)[:, perm].reshape(grid.shape)
    bad = dve_loss(f1, f2, shuffled, normalize_vectors=True)
    assert good < 0.25 * bad
    wrong_dir = dve_loss(f1, f2, _shift_grid(b, 2 * h, 2), normalize_vectors=True)  # inverted direction
    assert good < wrong_dir


def test_grid_positions_follow_reference_subsampling():
    grid = torch.rand(2, 70, 70, 2)
    gu, v, s = grid_positions(grid, 35, 35)
    assert s == 2 and gu.shape == (2, 35 * 35, 2) and v.shape == (35 * 35, 2)
    assert torch.equal(gu[:, 36], grid[:, 2, 2]) and torch.equal(v[36], torch.tensor([2.0, 2.0]))
    with pytest.raises(ValueError):
        grid_positions(grid, 36, 10)


def test_gradients_flow_to_both_views():
    f1 = torch.randn(2, 4, 3, 3, requires_grad=True)
    f2 = torch.randn(2, 4, 3, 3, requires_grad=True)
    dve_loss(f1, f2, _shift_grid(2, 6, 0)).backward()
    assert f1.grad.abs().sum() > 0 and f2.grad.abs().sum() > 0

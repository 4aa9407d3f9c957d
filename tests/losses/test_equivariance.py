import math

import pytest
import torch

from equinv.augment.tps import sample_tps, scaled, warp_images
from equinv.losses.equivariance import (
    cell_centres,
    paper_equivariance_loss,
    reference_equivariance_loss,
    warp_targets,
)


def _one_hot(b: int, h: int, w: int) -> torch.Tensor:
    return torch.eye(h * w).reshape(h * w, h, w).expand(b, -1, -1, -1).clone()


def _rbf(points: torch.Tensor, centres: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, M, 2) points → (B, M, C) Gaussian codes of the distances to ``centres`` (C, 2)."""
    return torch.exp(-torch.cdist(points, centres.expand(points.shape[0], -1, -1)) ** 2 / (2 * sigma**2))


def test_cell_centres_stride():
    c = cell_centres(2, 3, 4.0)
    assert c.shape == (6, 2)
    assert torch.allclose(c[0], torch.tensor([1.5, 1.5]))
    assert torch.allclose(c[5], torch.tensor([9.5, 5.5]))


def test_reference_loss_matches_bruteforce():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 3, 4)
    stride, t, pw = 4.0, 7.0, 0.5
    total = 0.0
    for b in range(2):
        x = torch.nn.functional.normalize(f[b].reshape(5, -1).T, dim=1)
        pts = [((j + 0.5) * stride, (i + 0.5) * stride) for i in range(3) for j in range(4)]
        for u in range(12):
            p = torch.softmax(t * (x @ x[u]), 0)
            total += sum(float(p[v]) * math.dist(pts[u], pts[v]) ** pw for v in range(12))
    assert reference_equivariance_loss(f, stride, t, pw).item() == pytest.approx(total / 24, rel=1e-5)


def test_reference_loss_small_for_distinct_large_for_constant():
    h = w = 8
    distinct = reference_equivariance_loss(_one_hot(2, h, w), 4.0)
    const = reference_equivariance_loss(torch.ones(2, h * w, h, w), 4.0)
    sharp = reference_equivariance_loss(_one_hot(2, h, w), 4.0, temperature=50.0)
    assert sharp.item() < 1e-6
    assert distinct.item() < 0.2 * const.item()
    # constant map: p uniform → the mean of ‖u − v‖^0.5 over all pairs
    c = cell_centres(h, w, 4.0)
    assert const.item() == pytest.approx(torch.cdist(c, c).pow(0.5).mean().item(), rel=1e-5)


def test_reference_loss_gradient_flows():
    f = torch.randn(1, 4, 6, 6, requires_grad=True)
    reference_equivariance_loss(f, 4.0).backward()
    assert f.grad is not None and torch.isfinite(f.grad).all() and f.grad.abs().sum() > 0


def test_paper_loss_lower_for_true_correspondence():
    g = torch.Generator().manual_seed(0)
    b, h, w, stride, canvas, margin = 2, 8, 8, 4.0, 40, 4
    params = sample_tps(b, scaled("dve", 2.0), g)
    tgt, valid = warp_targets(params, h, w, stride, canvas, margin)
    assert tgt.shape == (b, h * w, 2) and valid.shape == (b, h * w) and valid.float().mean() > 0.5
    centres = cell_centres(h, w, stride)
    # equivariant features: the warped view's cell u carries the code of its location g(u) in x
    f1 = _rbf(tgt, centres, 3.0).transpose(1, 2).reshape(b, -1, h, w)
    f2 = _rbf(centres.expand(b, -1, -1), centres, 3.0).transpose(1, 2).reshape(b, -1, h, w)
    good = paper_equivariance_loss(f1, f2, tgt, stride, valid, temperature=20.0)
    perm = torch.randperm(h * w, generator=g)
    bad = paper_equivariance_loss(f1, f2, tgt[:, perm], stride, valid[:, perm], temperature=20.0)
    assert good.item() < 0.5 * bad.item()
    assert good.item() < stride  # within a cell of the truth on average


def test_warp_targets_follow_the_image():
    """A bright dot at x's pixel p shows up in TPS(x) at the cell whose target is p."""
    g = torch.Generator().manual_seed(3)
    canvas, margin, side = 36, 2, 32
    params = sample_tps(1, scaled("dve", 1.0), g)
    tgt, valid = warp_targets(params, side, side, 1.0, canvas, margin)  # stride 1: every pixel
    img = torch.zeros(1, 1, canvas, canvas)
    img[0, 0, margin + 15, margin + 17] = 1.0  # (x=17, y=15) in the sliced frame
    warped = warp_images(img, params)[0, 0, margin:-margin, margin:-margin]
    u = int(warped.flatten().argmax())
    assert (tgt[0, u] - torch.tensor([17.0, 15.0])).norm() < 1.0

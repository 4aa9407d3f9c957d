import math

import torch
from kornia.geometry.transform import warp_points_tps

from equinv.augment import tps as T


def _reference_grid(params_w, aff, h, w, n=10):
    """The reference Warper's ``F @ Wa`` (DVE/CL utils/tps.py), written out for one sample."""
    xi, yi = torch.linspace(-1, 1, w, dtype=torch.float64), torch.linspace(-1, 1, h, dtype=torch.float64)
    yy, xx = torch.meshgrid(yi, xi, indexing="ij")
    pix = torch.stack((xx.reshape(-1), yy.reshape(-1)), 1)
    c = T.control_points(n).double()
    d = ((pix[:, None] - c[None]) ** 2).sum(-1)
    u = d * torch.log(d + 1e-5)
    f = torch.cat((u, torch.ones(h * w, 1, dtype=torch.float64), pix), 1)
    return (f @ torch.cat((params_w, aff), 0)).reshape(h, w, 2)


def test_map_matches_reference_formula_and_kornia():
    g = torch.Generator().manual_seed(0)
    p = T.sample_tps(3, "dve", g)
    h, w = 24, 30
    ours = T.sampling_map(p, h, w, normalized=True, dtype=torch.float64)
    for b in range(3):
        ref = _reference_grid(p.kernel_weights[b] / 2, p.affine[b], h, w)
        assert (ours[b] - ref).abs().max() < 1e-4  # only the 1e-5 inside the reference's log differs
    pts = torch.rand(3, 7, 2, generator=g, dtype=torch.float64) * 2 - 1
    k = warp_points_tps(pts, p.centers, p.kernel_weights, p.affine)
    assert torch.allclose(T._eval_normalized(p, pts), k, atol=1e-10)


def test_presets_and_identity():
    assert T.PRESETS["paper"] == T.PRESETS["cl"]
    assert T.PRESETS["eval"] == T.TPSConfig(5e-4, 5e-3, 0.05, 0.05, 2.5)
    assert T.PRESETS["dve"] == T.TPSConfig(1e-3, 1e-2, 0.1, 0.1, 5.0)
    img = torch.rand(2, 3, 16, 16)
    assert torch.allclose(T.warp_images(img, T.identity_tps(2)), img, atol=1e-5)
    zero = T.sample_tps(2, T.TPSConfig(0, 0, 0, 0, 0), torch.Generator().manual_seed(0))
    assert torch.allclose(zero.affine, T.identity_tps(2).affine)


def test_strength_multipliers():
    g = torch.Generator().manual_seed(0)
    p = T.sample_tps(4000, "dve", g, strength=0.5, aff_strength=0.0)
    assert torch.allclose(p.affine, T.identity_tps(4000).affine)  # affine part off
    w = p.kernel_weights / 2
    # half the entries ~ N(0, (0.5e-3)²), half ~ N(0, (0.5e-2)²)
    assert math.isclose(w.pow(2).mean().sqrt().item(), 0.5 * math.sqrt((1e-6 + 1e-4) / 2), rel_tol=0.05)
    q = T.sample_tps(4000, "paper", g)
    rot = torch.atan2(q.affine[:, 2, 0], q.affine[:, 1, 0])
    assert math.isclose(rot.std().item(), math.radians(2.0), rel_tol=0.05)
    assert (q.kernel_weights == 0).float().mean().item() > 0.45  # warpsd_subset 0 zeroes a random half


def test_landmark_inverse_and_reproducible():
    g = torch.Generator().manual_seed(1)
    p = T.sample_tps(8, "eval", g)
    lm = torch.rand(8, 6, 2, generator=g) * 40 + 12
    u, ok = T.warp_landmarks(p, lm, 64, 64, return_valid=True)
    assert ok.all()
    assert (T.map_points(p, u.double(), 64, 64) - lm).norm(dim=-1).max() < 1e-3
    p2 = T.sample_tps(8, "eval", torch.Generator().manual_seed(1))
    assert torch.equal(p.kernel_weights, p2.kernel_weights) and torch.equal(p.affine, p2.affine)
    assert T.warp_landmarks(p, torch.zeros(8, 0, 2), 64, 64).shape == (8, 0, 2)


def test_crop_map():
    grid = torch.arange(2 * 10 * 10 * 2, dtype=torch.float32).reshape(2, 10, 10, 2)
    assert T.crop_map(grid, 2).shape == (2, 6, 6, 2)
    assert torch.equal(T.crop_map(grid, 2)[:, 0, 0], grid[:, 2, 2] - 2)

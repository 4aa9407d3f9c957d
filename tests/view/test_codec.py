"""Stored descriptors: PCA reduction, 12-bit fixed point, exact dot products, base64 round trip."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from equinv.evaluate.transfer import transfer_landmarks
from equinv.view import codec


def _desc(b=3, d=40, s=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(b, d, s, s, generator=g), dim=1)


def test_reduce_keeps_small_descriptors_and_bounds_norms():
    x = _desc(d=16)
    r, info = codec.reduce(x, max_dim=64)
    assert info == {"in_dim": 16, "dim": 16, "pca_energy": 1.0}
    # no PCA: one global scale, so cosines are unchanged
    assert torch.allclose(F.normalize(r, dim=1), x, atol=1e-6)
    assert r.norm(dim=1).max() <= 1.0 + 1e-6


def test_reduce_pca_energy_matches_exact_eigendecomposition():
    g = torch.Generator().manual_seed(1)
    basis = torch.randn(6, 100, generator=g)
    noise = 0.01 * torch.randn(2, 100, 8, 8, generator=g)
    x = (torch.randn(2, 8, 8, 6, generator=g) @ basis).permute(0, 3, 1, 2) + noise  # 6 strong directions
    r, info = codec.reduce(x, max_dim=6)
    assert r.shape == (2, 6, 8, 8) and info["dim"] == 6 and info["in_dim"] == 100
    flat = x.permute(0, 2, 3, 1).reshape(-1, 100).double()
    ev = torch.linalg.eigvalsh(flat.T @ flat)
    assert abs(info["pca_energy"] - float(ev[-6:].sum() / ev.sum())) < 1e-3
    assert 0.99 < info["pca_energy"] <= 1.0


def test_quantise_round_trip_and_base64():
    r, _ = codec.reduce(_desc(), 64)
    q = codec.quantise(r)
    assert q.dtype == torch.int16 and q.shape == (3, 8, 8, 40)
    assert (codec.dequantise(q) - r).abs().max() <= 0.5 / codec.SCALE + 1e-7
    assert torch.equal(codec.decode(codec.encode(q), tuple(q.shape)), q)


def test_float32_dot_products_of_stored_descriptors_are_exact_integers():
    # worst cases for the bound: vectors of norm 1 along one axis and spread evenly over all 64
    d = 64
    spread = torch.full((d,), 1 / d**0.5)
    axis = torch.zeros(d)
    axis[0] = 1.0
    rand = F.normalize(torch.randn(29, d, generator=torch.Generator().manual_seed(2)), dim=1)
    x = torch.stack([spread, axis, -spread, *rand])  # (32, d)
    q = codec.quantise(x.T.reshape(1, d, 32, 1))
    ints = q.reshape(-1, d).long()
    exact = ints @ ints.T
    f32 = codec.dequantise(q).reshape(d, -1).T
    got = torch.einsum("kd,nd->kn", f32, f32) * codec.SCALE**2
    assert torch.equal(got.double(), exact.double())


def test_transfer_on_stored_descriptors_keeps_the_first_of_tied_cells():
    s, d = 6, 8
    v = F.normalize(torch.randn(d), dim=0)
    ref = F.normalize(torch.randn(1, d, s, s), dim=1)
    ref[0, :, 2, 3] = v
    tgt = F.normalize(torch.randn(1, d, s, s), dim=1) * 0.3
    tgt[0, :, 4, 1] = v  # two identical best cells: (x 1, y 4) comes first in row-major order
    tgt[0, :, 5, 5] = v
    both = torch.cat([ref, tgt])
    stored = codec.dequantise(codec.quantise(codec.reduce(both, 64)[0]))
    pred = transfer_landmarks(stored[0], torch.tensor([[3.0, 2.0]]), stored[1:], image_size=s)
    assert pred.tolist() == [[[1.0, 4.0]]]

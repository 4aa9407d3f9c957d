"""Compact, exactly matchable descriptors for the page.

Stored form: ``(B, S, S, d)`` int16, little-endian, base64 inside a ``.js`` data file (so the page works
from ``file://``), pixel-major so one pixel's vector is contiguous for the page's dot products.

* :func:`reduce`: more than ``max_dim`` channels are projected on the top ``max_dim`` directions of an
  *uncentred* PCA fitted on the shown images' pixels (uncentred, so dot products approximate the full
  descriptors' dot products, which are what the matching rule compares); then every vector is divided
  by one constant, the largest norm, so all norms are ≤ 1.
* :func:`quantise`: 12-bit fixed point, ``q = round(v · 2048)``. Every product ``q_a q_b`` and every partial
  sum of a dot product is an integer below 2²⁴ (Cauchy–Schwarz, norms ≤ 1), so the dot products are exact
  in float32 (torch), float64 (the page's JavaScript) and any summation order: the page's argmax is the
  argmax of :func:`equinv.evaluate.transfer.transfer_landmarks` on :func:`dequantise` of the same data,
  ties included (both keep the first maximal cell).
"""

from __future__ import annotations

import base64

import numpy as np
import torch
from torch import Tensor

#: Fixed-point scale of stored descriptors (2¹¹: exact float32 dot products for norms ≤ 1).
SCALE = 2048


def reduce(desc: Tensor, max_dim: int = 64) -> tuple[Tensor, dict]:
    """``(B, D, S, S)`` → ``(B, d, S, S)`` with ``d = min(D, max_dim)`` and every pixel norm ≤ 1.

    Returns the reduced descriptors and a description (``in_dim``, ``dim``, ``pca_energy``: the share of
    the pixels' summed squared norm kept by the PCA, 1.0 without PCA).
    """
    b, d, h, w = desc.shape
    x = desc.permute(0, 2, 3, 1).reshape(-1, d).double()
    info = {"in_dim": d, "dim": d, "pca_energy": 1.0}
    if d > max_dim:
        x = x @ top_directions(x.T @ x, max_dim)
        info.update(dim=max_dim, pca_energy=round(float(x.pow(2).sum() / desc.double().pow(2).sum()), 4))
    x = x / x.norm(dim=1).max().clamp_min(1e-12)
    return x.reshape(b, h, w, -1).permute(0, 3, 1, 2).float().contiguous(), info


def top_directions(gram: Tensor, k: int) -> Tensor:
    """``(D, k)`` orthonormal top eigenvectors of a PSD ``(D, D)`` matrix (seeded randomised subspace
    iteration: a full ``eigh`` of a 960² matrix takes seconds on a small CPU, this a fraction)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        u, _, _ = torch.svd_lowrank(gram, q=min(gram.shape[0], k + 16), niter=6)
    return u[:, :k]


def quantise(desc: Tensor) -> Tensor:
    """``(B, d, S, S)`` float, norms ≤ 1 → ``(B, S, S, d)`` int16 fixed point (pixel-major)."""
    return torch.round(desc.permute(0, 2, 3, 1) * SCALE).to(torch.int16).contiguous()


def dequantise(q: Tensor) -> Tensor:
    """``(B, S, S, d)`` int16 → ``(B, d, S, S)`` float32 (exact: ``q / 2048``)."""
    return (q.float() / SCALE).permute(0, 3, 1, 2).contiguous()


def encode(q: Tensor) -> str:
    """int16 tensor → base64 of its little-endian bytes."""
    return base64.b64encode(q.numpy().astype("<i2").tobytes()).decode("ascii")


def decode(text: str, shape: tuple[int, ...]) -> Tensor:
    """Inverse of :func:`encode`."""
    a = np.frombuffer(base64.b64decode(text), dtype="<i2").astype(np.int16)
    return torch.from_numpy(a.reshape(shape).copy())


def encode_uint8(a: np.ndarray) -> str:
    """uint8 array → base64 (part labels, strengths)."""
    return base64.b64encode(np.ascontiguousarray(a, dtype=np.uint8).tobytes()).decode("ascii")

"""DVE's dense correlation loss with an auxiliary image (``dense_correlation_loss_dve``, protocol.md §7).

Views and direction (the :class:`~equinv.augment.tps.WarpPair` convention, the reference's ``meta['grid']``):

- ``f1 = Φ(view1)``: view1 = B = TPS₂(A), the **source**: the sum runs over its feature cells ``u``;
- ``f2 = Φ(view2)``: view2 = A = TPS₁(I), the **target**: ``v`` runs over its feature cells;
- ``grid[b, i, j] = (x, y)``: the location **in view2** (input pixels) of pixel ``(x=j, y=i)`` of view1,
  i.e. ``WarpPair.grid`` (after cropping / rescaling to the network input frame).

For each image ``b`` (auxiliary ``α = f1[(b + 1) mod B]``; descriptors optionally L2-normalised ×20)::

    p₁(w|u) = softmax_w ⟨f1_u, fα_w⟩,   f̂_u = Σ_w p₁(w|u) fα_w,
    p(v|u)  = softmax_v ⟨f̂_u, f2_v⟩,
    L = 1/(B·H·W) Σ_b Σ_u Σ_v ‖g(u) − v‖^power · p(v|u)

Positions as the reference: with ``s = H_in // H``, feature cell ``(i, j)`` stands for input pixel
``(j·s, i·s)`` (the reference's ``[::stride, ::stride]`` subsampling of the pixel grid, not the cell
centre), so ``g(u) = grid[b, i·s, j·s]`` and ``v = (j'·s, i'·s)``. No masking: cells whose ``g(u)`` falls
outside view2 still count (as in the reference).

Vectorised over the batch: the correlations are ``(B, HW, HW)`` (48² → 2304² ≈ 21 MB per image in fp32);
``chunk`` limits how many images are processed at once.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def grid_positions(grid: Tensor, h: int, w: int) -> tuple[Tensor, Tensor, int]:
    """``g(u)`` ``(B, h·w, 2)`` and ``v`` ``(h·w, 2)`` in input pixels, and the stride ``H_in // h``."""
    b, hin, win, _ = grid.shape
    s = hin // h
    if s < 1 or win // w != s:
        raise ValueError(f"grid {hin}x{win} does not match features {h}x{w}")
    gu = grid[:, ::s, ::s][:, :h, :w].reshape(b, h * w, 2)
    ys = torch.arange(h, device=grid.device, dtype=grid.dtype) * s
    xs = torch.arange(w, device=grid.device, dtype=grid.dtype) * s
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return gu, torch.stack((xx.reshape(-1), yy.reshape(-1)), -1), s


def dve_loss(f1: Tensor, f2: Tensor, grid: Tensor, normalize_vectors: bool = True, power: float = 0.5,
             scale: float = 20.0, chunk: int | None = None) -> Tensor:
    """DVE loss of descriptors ``f1``, ``f2`` ``(B, C, H, W)`` given ``grid`` ``(B, H_in, W_in, 2)``.

    Args:
        f1: descriptors of view1 (source, where ``u`` lives; its neighbour in the batch is the auxiliary).
        f2: descriptors of view2 (target).
        grid: location in view2 of every input pixel of view1, in input pixels (x, y).
        normalize_vectors: L2-normalise every descriptor and multiply by ``scale`` (Hourglass: True;
            SmallNet-64d: False).
        power: exponent of the distance (0.5).
        chunk: images per vectorised chunk (all at once when ``None``).

    Returns:
        scalar loss (float32, or float64 for float64 inputs).
    """
    b, c, h, w = f1.shape
    if f2.shape != f1.shape:
        raise ValueError(f"f1 {tuple(f1.shape)} and f2 {tuple(f2.shape)} differ")
    if grid.shape[0] != b:
        raise ValueError(f"grid batch {grid.shape[0]} != feature batch {b}")
    x1 = f1.flatten(2).transpose(1, 2)  # (B, HW, C)
    x2 = f2.flatten(2).transpose(1, 2)
    if normalize_vectors:
        x1 = F.normalize(x1, p=2, dim=-1) * scale
        x2 = F.normalize(x2, p=2, dim=-1) * scale
    xa = torch.roll(x1, shifts=-1, dims=0)  # xa[b] = x1[(b + 1) mod B]
    dt = torch.promote_types(f1.dtype, torch.float32)  # fp32 at least (bf16/fp16 features), fp64 kept
    gu, v, _ = grid_positions(grid.to(dt), h, w)
    step = b if chunk is None else max(1, chunk)
    total = f1.new_zeros((), dtype=dt)
    for i in range(0, b, step):
        sl = slice(i, i + step)
        p1 = torch.softmax(torch.bmm(x1[sl], xa[sl].transpose(1, 2)), dim=-1)  # (b, HW_u, HW_w)
        fhat = torch.bmm(p1, xa[sl])  # (b, HW_u, C)
        p = torch.softmax(torch.bmm(fhat, x2[sl].transpose(1, 2)), dim=-1)  # (b, HW_u, HW_v)
        with torch.no_grad():
            dist = torch.cdist(gu[sl], v[None].expand(gu[sl].shape[0], -1, -1)).pow(power)
        total = total + (dist * p.to(dt)).sum()
    return total / (b * h * w)


def dve_loss_loop(f1: Tensor, f2: Tensor, grid: Tensor, normalize_vectors: bool = True, power: float = 0.5,
                  scale: float = 20.0) -> Tensor:
    """Reference-shaped per-image loop (slow; for tests), written after DVE ``model/loss.py``."""
    b, c, h, w = f1.shape
    s = grid.shape[1] // h
    ys, xs = torch.meshgrid(torch.arange(grid.shape[1], dtype=grid.dtype),
                            torch.arange(grid.shape[2], dtype=grid.dtype), indexing="ij")
    xxyy = torch.stack((xs, ys), -1)[::s, ::s][:h, :w]  # (h, w, 2)
    gu = grid[:, ::s, ::s][:, :h, :w]
    loss = 0.0
    for i in range(b):
        a1 = f1[i].reshape(c, h * w)
        a2 = f2[i].reshape(c, h * w)
        aa = f1[(i + 1) % b].reshape(c, h * w)
        if normalize_vectors:
            a1 = F.normalize(a1, p=2, dim=0) * scale
            a2 = F.normalize(a2, p=2, dim=0) * scale
            aa = F.normalize(aa, p=2, dim=0) * scale
        sm = F.softmax((a1.t() @ aa).reshape(h, w, -1), dim=2).reshape(h, w, h, w)
        via = (sm[None] * aa.reshape(-1, 1, 1, h, w)).sum((3, 4)).reshape(c, h * w)
        sm2 = F.softmax((via.t() @ a2).reshape(h, w, -1), dim=2).reshape(h, w, h, w)
        diff = gu[i, :, :, None, None, :] - xxyy[None, None]
        diff = (diff * diff).sum(4).sqrt().pow(power)
        loss = loss + (diff * sm2).sum()
    return loss / (h * w * b)

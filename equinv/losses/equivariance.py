"""Equivariance losses for the feature projector (protocol.md §3, §8 item 2, §9).

``reference_equivariance_loss``: the loss the reference code trains with (x' = x, g = identity,
CL2 ``train_feature_projector.py:493-519``)::

    f_u ← f_u / ‖f_u‖,   p(v|u) = softmax_v(T·⟨f_u, f_v⟩),   L = 1/(B·h·w) Σ_b Σ_u Σ_v ‖u − v‖^power · p(v|u)

with u, v the centres of the feature cells in **input pixels** (a grid at ``stride``), ``T = 7`` and
``power = 0.5``.

``paper_equivariance_loss``: Eq. 3 of the paper with a known warp between the two images::

    p(v|u) = softmax_v(⟨f1_u, f2_v⟩ / τ),   L = 1/(B·|Ω|) Σ_b Σ_u Σ_v ‖g(u) − v‖^power · p(v|u)

Direction (pitfalls.md item 4): ``equinv.augment.tps.warp_images(x, P)`` makes ``x' = TPS(x)`` whose
pixel ``u`` samples ``x`` at ``sampling_map(P)[u]``; that map is exact (0.0 px), its inverse is not a TPS.
So the sum runs over the pixels ``u`` of the **warped** image: ``f1 = Φ(x')``, ``f2 = Φ(x)`` and
``g(u) = sampling_map(P)(u)`` (the location in ``x`` of pixel ``u`` of ``x'``); no inversion is needed.
This is also the convention of :class:`~equinv.augment.tps.WarpPair` (``f1 = Φ(view1)``,
``f2 = Φ(view2)``, ``g = pair.grid``) and of DVE's loss (§7). ``u`` whose ``g(u)`` falls outside ``x``
(the warp pulled in padding) carry no target and are masked out. :func:`warp_targets` evaluates ``g``
at the feature-cell centres.

Memory: the correlation is ``(B, h·w, h·w)``; at 24² that is 576² = 0.33 M entries per image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from equinv import coords as C
from equinv.augment.tps import TPSParams, map_points


def cell_centres(h: int, w: int, stride: float, device=None, dtype=torch.float32) -> Tensor:
    """``(h·w, 2)`` (x, y) centres of the feature cells in input pixels, row-major.

    Cell ``(i, j)`` of an ``h × w`` map of an ``(h·s) × (w·s)`` input covers input pixels
    ``[j·s, (j+1)·s)``; its centre is ``(j + ½)·s − ½`` (:func:`equinv.coords.rescale`, the
    ``align_corners=False`` convention).
    """
    ys = C.rescale(torch.arange(h, device=device, dtype=dtype), stride)
    xs = C.rescale(torch.arange(w, device=device, dtype=dtype), stride)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), -1)


def _flat_normalised(f: Tensor, normalize: bool) -> Tensor:
    """``(B, d, h, w)`` → ``(B, h·w, d)``, unit vectors per pixel if asked."""
    f = f.flatten(2).transpose(1, 2)
    return F.normalize(f, dim=-1) if normalize else f


def reference_equivariance_loss(f: Tensor, stride: float, temperature: float = 7.0, power: float = 0.5,
                                normalize: bool = True) -> Tensor:
    """The reference's projector loss on one view (identity warp).

    Args:
        f: ``(B, d, h, w)`` projected features (24² in the reference, stride 96/24 = 4).
        stride: input pixels per feature cell.
        temperature: logit multiplier T (τ = 1/T).
        power: exponent of the distance (0.5 in the code, 1 in the paper).
        normalize: L2-normalise each pixel's d-vector first (the reference does).

    Returns:
        scalar: mean over images and source cells of ``Σ_v ‖u − v‖^power p(v|u)``.
    """
    b, _, h, w = f.shape
    x = _flat_normalised(f, normalize)
    logits = temperature * torch.bmm(x, x.transpose(1, 2))  # (B, hw, hw)
    p = torch.softmax(logits.float(), dim=-1)
    c = cell_centres(h, w, stride, f.device, torch.float32)
    dist = torch.cdist(c, c).pow(power)  # (hw, hw), 0 on the diagonal
    return (p * dist).sum(-1).mean()


def warp_targets(params: TPSParams, h: int, w: int, stride: float, canvas: int, margin: int = 0,
                 device=None) -> tuple[Tensor, Tensor]:
    """``g(u)`` at the feature-cell centres of the warped view, and which ``u`` have a target.

    The warp ``params`` acts on a ``canvas × canvas`` image from which ``margin`` px per side are sliced
    afterwards (136 → 96: margin 20); features of the sliced ``(h·stride)²`` view. Returns targets
    ``(B, h·w, 2)`` in the sliced view's input pixels (the location in ``x`` of cell ``u`` of ``x'``) and
    ``(B, h·w)`` bool: the target lies inside the sliced view (±½ px).
    """
    c = C.view_to_canvas(cell_centres(h, w, stride, device, torch.float64), margin)
    g = C.canvas_to_view(map_points(params, c, canvas, canvas), margin)
    return g.float(), C.inside(g, (h * stride, w * stride))


def paper_equivariance_loss(f1: Tensor, f2: Tensor, targets: Tensor, stride: float, valid: Tensor | None = None,
                            temperature: float = 7.0, power: float = 1.0, normalize: bool = True) -> Tensor:
    """Eq. 3 between a warped view and its source.

    Args:
        f1: ``(B, d, h, w)`` features of the warped image ``x' = TPS(x)`` (the sum runs over its cells u).
        f2: ``(B, d, h, w)`` features of ``x``.
        targets: ``(B, h·w, 2)`` or ``(B, h, w, 2)``: ``g(u)``, the location in ``x`` (input pixels) of
            cell ``u`` of ``x'``, e.g. from :func:`warp_targets` (or ``WarpPair.grid`` sampled at the
            cell centres).
        stride: input pixels per feature cell (v = cell centres of ``f2``, see :func:`cell_centres`).
        valid: ``(B, h·w)`` or ``(B, h, w)`` bool; cells without a target are left out of the mean.
        temperature: 1/τ. power: exponent of ``‖g(u) − v‖`` (1 in the paper).
        normalize: L2-normalise each pixel's vector before the inner product.

    Returns:
        scalar: mean over (image, valid u) of ``Σ_v ‖g(u) − v‖^power p(v|u)``.
    """
    b, _, h, w = f1.shape
    t = targets.reshape(b, h * w, 2)
    m = None if valid is None else valid.reshape(b, h * w)
    return point_equivariance_loss(f1.flatten(2).transpose(1, 2), f2, t, stride, m, temperature, power, normalize)


def point_equivariance_loss(a: Tensor, f2: Tensor, targets: Tensor, stride: float, valid: Tensor | None = None,
                            temperature: float = 7.0, power: float = 1.0, normalize: bool = True) -> Tensor:
    """Eq. 3 for descriptors ``a`` of ``N`` points ``u`` of one view against every cell ``v`` of another.

    Args:
        a: ``(B, N, d)`` descriptors of the points ``u`` (e.g. sampled from a feature map at tracked points).
        f2: ``(B, d, h, w)`` features of the other view.
        targets: ``(B, N, 2)``: where each ``u`` lies in the other view (its input pixels).
        stride: input pixels per cell of ``f2``.
        valid: ``(B, N)`` bool: the points that count (e.g. seen in both views); all when ``None``.
        temperature, power, normalize: as :func:`paper_equivariance_loss`.

    Returns:
        scalar float32: mean over (image, valid u) of ``Σ_v ‖g(u) − v‖^power p(v|u)``.
    """
    b = a.shape[0]
    a = F.normalize(a, dim=-1) if normalize else a
    z = _flat_normalised(f2, normalize)
    p = torch.softmax((temperature * torch.bmm(a, z.transpose(1, 2))).float(), dim=-1)  # (B, N, hw_2)
    v = cell_centres(f2.shape[-2], f2.shape[-1], stride, a.device, torch.float32)
    t = targets.to(a.device, torch.float32)
    dist = torch.cdist(t, v.expand(b, -1, -1)).pow(power)  # (B, N, hw_2)
    per_u = (p * dist).sum(-1)
    if valid is None:
        return per_u.mean()
    m = valid.to(per_u.device, per_u.dtype)
    return (per_u * m).sum() / m.sum().clamp_min(1.0)


def through_auxiliary(a: Tensor, aux: Tensor, temperature: float = 7.0) -> Tensor:
    """Descriptors ``a`` ``(B, N, d)`` rebuilt from an auxiliary map ``aux`` ``(B, d, h, w)`` (DVE's step).

    Each descriptor is softly matched to the auxiliary image's cells, ``p(w|u) = softmax_w(T·cos(a_u, aux_w))``,
    and replaced by ``Σ_w p(w|u) aux_w`` (unit cells): scoring the result with Eq. 3 asks that a point's
    descriptor find its own location *through another instance*, as DVE's loss does (:mod:`equinv.losses.dve`).
    """
    z = _flat_normalised(aux, True)  # (B, hw, d)
    p = torch.softmax((temperature * torch.bmm(F.normalize(a, dim=-1), z.transpose(1, 2))).float(), dim=-1)
    return torch.bmm(p.to(z.dtype), z)

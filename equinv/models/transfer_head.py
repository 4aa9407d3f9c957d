"""Landmarks by transfer from a few labelled examples: local matching under a window around the mean shape.

With ten labelled images a heat-map regressor has tens of thousands of weights to fit and ends worse than
the mean training shape (docs/landmarks.md). The representation's own use needs no training: describe
every labelled landmark by the hypercolumn at its position, and find where each description matches in
a new image. Matching across identities makes large confusions (an eye for the other eye), so the
search is kept to a window around where the landmark lies in the labelled images: for landmark ``k``,
the grid cells within ``window · σ_k`` of its mean position ``m_k`` (``σ_k``: the RMS distance of the
labelled positions from ``m_k``). For each labelled example ``n`` a soft-argmax over the window of
``cos(d_nk, F(p)) / T`` gives a candidate, and the prediction is the median of the candidates of the
examples where the landmark is visible.

Descriptors are the hypercolumn upsampled to the grid and L2-normalised per layer, as matching uses
them, divided by the number of layers so that a similarity is a mean cosine in [-1, 1].
``window`` and ``T`` are chosen by leave-one-out over the labelled examples
(:func:`equinv.landmarks.transfer.fit_transfer`); when no setting beats the mean shape there, the head
predicts the mean shape (``shape_only``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Images described at once in :meth:`TransferHead.forward` (ResNet50: 3,840 channels × ~1,000 cells × 4 B ≈ 15 MB
#: an image).
CHUNK = 8


def describe(maps: Sequence[Tensor], size: int) -> Tensor:
    """``(B, C, size, size)`` descriptors of per-layer maps: upsampled, L2-normalised per layer, / layers."""
    ups = [F.normalize(F.interpolate(m.float(), size=(size, size), mode="bilinear", align_corners=False), dim=1)
           for m in maps]
    return torch.cat(ups, dim=1) / len(ups)


def describe_at(maps: Sequence[Tensor], points: Tensor) -> Tensor:
    """``(B, C, P)``: :func:`describe`'s descriptors at grid-cell centres ``points`` ``(P, 2)`` only, read from
    the native maps (bilinear with border clamping is what ``interpolate(align_corners=False)`` computes at a
    cell centre, so the values equal :func:`describe`'s there without building the whole grid)."""
    grid = points[None, None].to(maps[0].dtype)
    cols = [F.normalize(F.grid_sample(m.float(), grid.expand(m.shape[0], -1, -1, -1).float(), mode="bilinear",
                                      padding_mode="border", align_corners=False)[:, :, 0], dim=1) for m in maps]
    return torch.cat(cols, dim=1) / len(cols)


def sample_at(dense: Tensor, points: Tensor) -> Tensor:
    """``(B, K, C)``: ``dense`` ``(B, C, S, S)`` bilinearly read at normalised ``points`` ``(B, K, 2)``."""
    g = F.grid_sample(dense, points[:, :, None, :].to(dense.dtype), mode="bilinear", align_corners=False)
    return g[..., 0].permute(0, 2, 1)


def grid_points(size: int, device=None) -> Tensor:
    """``(size², 2)`` normalised centres of the grid cells, row-major (x right, y down)."""
    c = (torch.arange(size, device=device, dtype=torch.float32) + 0.5) / size * 2.0 - 1.0
    yy, xx = torch.meshgrid(c, c, indexing="ij")
    return torch.stack((xx, yy), -1).reshape(-1, 2)


def candidates(sim: Tensor, centre: Tensor, radius: Tensor, temperature: float, points: Tensor) -> Tensor:
    """Soft-argmax candidates ``(B, N, K, 2)`` of similarities ``sim`` ``(B, N, K, P)`` over grid ``points``
    ``(P, 2)``, each landmark's search kept within ``radius`` ``(K,)`` (or ``(B, K)``) of ``centre`` ``(K, 2)``
    (or ``(B, K, 2)``); a window holding no cell falls back to the nearest cell."""
    c = centre if centre.dim() == 3 else centre[None]
    r = radius if radius.dim() == 2 else radius[None]
    dist = (points[None, None] - c[:, :, None]).norm(dim=-1)  # (B|1, K, P)
    inside = dist <= torch.maximum(r[..., None], dist.amin(-1, keepdim=True))
    logits = (sim / temperature).masked_fill(~inside[:, None], float("-inf"))
    return torch.einsum("bnkp,pd->bnkd", torch.softmax(logits, dim=-1), points)


def vote(cands: Tensor, valid: Tensor, fallback: Tensor) -> Tensor:
    """``(B, K, 2)``: median over examples of ``cands`` ``(B, N, K, 2)`` where ``valid`` ``(B|1, N, K)``; the
    ``fallback`` ``(K, 2)`` (or ``(B, K, 2)``) where no example is valid."""
    v = valid.expand(cands.shape[:3])[..., None]
    med = torch.where(v, cands, torch.nan).nanmedian(dim=1).values
    fb = fallback if fallback.dim() == 3 else fallback[None].expand_as(med)
    return torch.where(torch.isnan(med), fb, med)


class TransferHead(nn.Module):
    """Landmarks of new images from ``N`` labelled examples (module docstring). ``forward(maps, size)`` → points.

    Args:
        channels: the source's per-layer channel counts.
        descriptors: ``(N, K, C)`` descriptors of the labelled landmarks (:func:`describe`, :func:`sample_at`).
        visible: ``(N, K)`` bool, which labelled landmarks exist.
        shape: ``(K, 2)`` mean labelled position; ``spread``: ``(K,)`` RMS distance from it (σ_k).
        window: search radius in units of ``spread``; ``temperature``: the soft-argmax's T.
        shape_only: predict ``shape`` (leave-one-out found no setting better than it).
    """

    def __init__(self, channels: Sequence[int], descriptors: Tensor, visible: Tensor, shape: Tensor, spread: Tensor,
                 window: float, temperature: float, shape_only: bool = False):
        super().__init__()
        self.channels = tuple(int(c) for c in channels)
        self.window, self.temperature = float(window), float(temperature)
        self.register_buffer("descriptors", descriptors.float().clone())
        self.register_buffer("visible", visible.bool().clone())
        self.register_buffer("shape", shape.float().clone())
        self.register_buffer("spread", spread.float().clone())
        self.register_buffer("shape_only", torch.tensor(bool(shape_only)))

    @property
    def n_landmarks(self) -> int:
        return int(self.shape.shape[0])

    def forward(self, maps: Sequence[Tensor] | Tensor, size: int = 48) -> Tensor:
        """``(B, K, 2)`` normalised points of the images whose per-layer maps are ``maps``."""
        if torch.is_tensor(maps):
            maps = [maps]
        b = maps[0].shape[0]
        if bool(self.shape_only):
            return self.shape[None].expand(b, -1, -1).clone()
        points = grid_points(size, maps[0].device)
        radius = self.window * self.spread
        # only the cells some window can reach are described and compared (a small share of the grid)
        near = ((points[None] - self.shape[:, None]).norm(dim=-1) <= radius[:, None] + 2.0 / size).any(0)
        pts = points[near.nonzero()[:, 0]]
        out = []
        for s in range(0, b, CHUNK):  # a chunk's (CHUNK, C, P) descriptors bound the memory whatever the batch
            part = [m[s : s + CHUNK] for m in maps]
            sim = torch.einsum("nkc,bcp->bnkp", self.descriptors, describe_at(part, pts))
            out.append(vote(candidates(sim, self.shape, radius, self.temperature, pts), self.visible[None],
                            self.shape))
        return torch.cat(out)

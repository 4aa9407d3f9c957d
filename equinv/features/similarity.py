"""Cosine similarity of a few query points against every pixel of a descriptor grid, without the grid.

The dense descriptor of a source (:func:`~equinv.features.descriptors.descriptor_maps`) at pixel ``p`` of the
``S²`` grid is built from the source's native maps ``m_l`` ``(C_l, h_l, w_l)``: each bilinearly upsampled
(``align_corners=False``) to ``S²`` and L2-normalised per pixel, block by block (``layerwise``) or as one
vector. Materialised, the ResNet18 hypercolumn at 96² is 960 × 96² floats, 35 MB an image, and building it
costs several times the backbone's forward pass. Matching only needs the similarity of K query descriptors
(the reference landmarks) with every target pixel, and bilinear upsampling is linear and separable,
``up(m) = U·m·Vᵀ`` (``U``, ``V``: :func:`~equinv.models.hypercolumn.bilinear_matrix`), so per block

* numerator: ``q_l · up(m_l)(p) = up(q_l · m_l)(p)``, K dot products at the native resolution, upsampled;
* norm²: ``‖up(m_l)(p)‖²`` is a quadratic form in the dot products of the (at most four) native pixels that
  ``p`` interpolates: squared norms and neighbour products at the native resolution, brought to the grid by
  the same separable weights; nothing of size ``C_l × S²`` is formed;

and the cosine is their ratio, summed over blocks (``layerwise``) or over the whole vector. The result equals
the materialised computation up to float rounding (the sums run in a different order: relative ~1e-7; an
argmax can differ only between two pixels whose similarities tie to that precision; tested).
A map already at ``S²`` (a projector's output) is used as it is; one larger than ``S²`` is resampled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from equinv import coords as C
from equinv.models.hypercolumn import bilinear_matrix

#: ``F.normalize``'s floor on the norm: the same division as the materialised descriptors.
EPS = 1e-12


def grid_cells(points: Tensor, size: int) -> tuple[Tensor, Tensor]:
    """Row and column ``(…, K)`` of the grid cell nearest to pixel points ``(…, K, 2)`` (x, y) of the S² grid
    (:func:`equinv.coords.nearest_pixel`)."""
    ix, iy = C.nearest_pixel(points, size)
    return iy, ix


def read_cells(desc: Tensor, points: Tensor) -> Tensor:
    """Grid descriptors ``(B, D, S, S)`` at the cells nearest to pixel points ``(B, K, 2)`` → ``(B, K, D)``."""
    iy, ix = grid_cells(points, desc.shape[-1])
    cells = (iy * desc.shape[-1] + ix)[:, None].expand(-1, desc.shape[1], -1)
    return desc.flatten(2).gather(2, cells).transpose(1, 2)


def argmax_points(sim: Tensor) -> Tensor:
    """``(…, H, W)`` similarities → pixel ``(…, 2)`` (x, y) of each maximum (the first one on ties)."""
    w = sim.shape[-1]
    j = sim.flatten(-2).argmax(-1)
    return torch.stack(((j % w).float(), torch.div(j, w, rounding_mode="floor").float()), -1)


def _compute_dtype(m: Tensor) -> Tensor:
    """Reduced-precision maps are read in float32: the similarity is always summed in float32 or wider."""
    return m.float() if m.dtype in (torch.float16, torch.bfloat16) else m


def _below_grid(m: Tensor, size: int) -> bool:
    """Whether ``m`` is upsampled to the grid (read factorised) rather than at or above it (read as it is)."""
    return m.shape[-2] < size and m.shape[-1] < size


def _resampled(m: Tensor, size: int) -> Tensor:
    """A map at ``size``² as ``descriptor_maps`` reads it (only for maps not smaller than the grid)."""
    if m.shape[-2:] == (size, size):
        return m
    return F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)


def _upsampled_sq_norm(m: Tensor, size: int) -> Tensor:
    """``‖up(m)(y, x)‖²`` ``(B, S, S)`` of ``m`` ``(B, C, h, w)`` (h, w < S) without forming ``up(m)``.

    ``up(m)(y, x)`` mixes the four native pixels ``(a, b), (a, b+1), (a+1, b), (a+1, b+1)`` with weights
    ``U[y,·]·V[x,·]``, so its squared norm is a quadratic form in the dot products of those pixels: their
    squared norms and the five kinds of neighbour products (right, down, both diagonals), each a
    ``(B, h', w')`` map at the native resolution, brought to the grid by ``L·E·Rᵀ`` with ``L``, ``R`` the
    products of the bilinear weights of the two rows and columns involved.
    """
    _, _, h, w = m.shape
    u = bilinear_matrix(h, size, m.device, m.dtype)  # (S, h): at most two adjacent non-zeros a row
    v = bilinear_matrix(w, size, m.device, m.dtype)  # (S, w)
    uu, vv = u * u, v * v
    u2, v2 = u[:, :-1] * u[:, 1:], v[:, :-1] * v[:, 1:]  # weight products of rows (a, a+1), columns (b, b+1)

    def dots(a: Tensor, b: Tensor) -> Tensor:
        return (a * b).sum(1)

    def to_grid(left: Tensor, e: Tensor, right: Tensor) -> Tensor:  # left·e·rightᵀ per image, as two 2-D matmuls
        b, hh, ww = e.shape
        t = (e.reshape(b * hh, ww) @ right.T).reshape(b, hh, size).transpose(0, 1).reshape(hh, b * size)
        return (left @ t).reshape(size, b, size).transpose(0, 1)

    right = dots(m[..., :, :-1], m[..., :, 1:])  # (B, h, w-1)
    down = dots(m[..., :-1, :], m[..., 1:, :])  # (B, h-1, w)
    diagonals = dots(m[..., :-1, :-1], m[..., 1:, 1:]) + dots(m[..., :-1, 1:], m[..., 1:, :-1])  # (B, h-1, w-1)
    return (to_grid(uu, m.pow(2).sum(1), vv) + to_grid(2.0 * uu, right, v2) + to_grid(2.0 * u2, down, vv)
            + to_grid(2.0 * u2, diagonals, v2))


@dataclass
class GridDescriptors:
    """The dense unit-norm descriptors of a batch at an ``S²`` grid, kept as the source's native maps.

    ``maps``: ``[(B, C_l, h_l, w_l)]`` (a source's ``maps(x)``); ``size``: S; ``layerwise``: normalise each
    map's block separately (a one-map source is normalised as a whole either way). Equivalent to
    :func:`~equinv.features.descriptors.descriptor_maps` (what :meth:`at` and :meth:`similarity` read).
    """

    maps: list[Tensor]
    size: int
    layerwise: bool = True

    @property
    def channels(self) -> tuple[int, ...]:
        return tuple(int(m.shape[1]) for m in self.maps)

    def select(self, index) -> GridDescriptors:
        """The descriptors of images ``index`` (a slice or an index tensor)."""
        return GridDescriptors([m[index] for m in self.maps], self.size, self.layerwise)

    def to(self, dtype: torch.dtype) -> GridDescriptors:
        """The same descriptors with the maps held in ``dtype`` (e.g. float16: half the memory; the
        similarity is still summed in float32)."""
        return GridDescriptors([m.to(dtype) for m in self.maps], self.size, self.layerwise)

    def at(self, points: Tensor) -> Tensor:
        """Unit-norm descriptors ``(B, K, D)`` at the grid cells nearest to pixel points ``(B, K, 2)`` (x, y).

        Each block is the bilinear combination of its native map at the cell (the upsampled value), so
        nothing of grid size is formed.
        """
        iy, ix = grid_cells(points, self.size)
        blocks = []
        for m in map(_compute_dtype, self.maps):
            if not _below_grid(m, self.size):  # at (or resampled to) the grid: read the cell
                blocks.append(read_cells(_resampled(m, self.size), points))
                continue
            h, w = m.shape[-2:]
            u = bilinear_matrix(h, self.size, m.device, m.dtype)[iy]  # (B, K, h)
            v = bilinear_matrix(w, self.size, m.device, m.dtype)[ix]  # (B, K, w)
            weights = (u[..., :, None] * v[..., None, :]).flatten(2)  # (B, K, h·w)
            blocks.append(torch.bmm(weights, m.flatten(2).transpose(1, 2)))  # (B, K, C)
        if self.layerwise:
            return torch.cat([F.normalize(q, dim=-1) for q in blocks], dim=-1)
        return F.normalize(torch.cat(blocks, dim=-1), dim=-1)

    def similarity(self, queries: Tensor) -> Tensor:
        """Cosine ``(B, K, S, S)`` of queries ``(B, K, D)`` (unit-norm blocks, e.g. :meth:`at` of another
        batch; query ``b`` against image ``b``) with every grid pixel, one matmul per map and batch."""
        if queries.shape[-1] != sum(self.channels):
            raise ValueError(f"queries are {queries.shape[-1]}-d, the descriptors {sum(self.channels)}-d")
        sim, nums, sq_norms = 0.0, 0.0, 0.0  # running sums over the maps: one (B, K, S, S) buffer or two
        for q, m in zip(torch.split(queries, self.channels, dim=-1), self.maps, strict=True):
            m = _compute_dtype(m)
            small = _below_grid(m, self.size)
            if not small:
                m = _resampled(m, self.size)
            num = torch.bmm(q.to(m.dtype), m.flatten(2)).unflatten(2, m.shape[-2:])  # (B, K, h, w)
            if small:
                num = F.interpolate(num, size=(self.size, self.size), mode="bilinear", align_corners=False)
                sq = _upsampled_sq_norm(m, self.size)  # (B, S, S)
                norm = sq.sqrt()
            else:
                norm = torch.linalg.vector_norm(m, dim=1)  # as F.normalize takes it
                sq = norm.square()
            if self.layerwise:
                sim = sim + num / norm.clamp_min(EPS)[:, None]
            else:
                nums, sq_norms = nums + num, sq_norms + sq
        return sim if self.layerwise else nums / sq_norms.sqrt().clamp_min(EPS)[:, None]

"""Dense descriptors of any feature source: unit-norm per pixel on a common grid (matching, transfer, parts).

The reference's matching descriptor (protocol.md §2, §5a) is the hypercolumn upsampled bilinearly
(``align_corners=False``) to the grid (96² for matching) with each layer block L2-normalised per pixel. Every
source is read the same way here: each of its maps is upsampled to the grid and normalised per pixel, block
by block (``layerwise``, the reference) or as a whole vector. A one-map source (projected, NMF, DVE) is
normalised as a whole either way. The output is unit-norm per pixel, so matching is a plain dot product
(= cosine).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equinv.features.similarity import GridDescriptors
from equinv.features.stats import prepare_input


def upsampled_maps(source: nn.Module, x: Tensor, size: int) -> list[Tensor]:
    """The source's maps of normalised inputs ``x``, each bilinear (``align_corners=False``) to ``size``²."""
    return [m if m.shape[-2:] == (size, size)
            else F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) for m in source.maps(x)]


def dense_features(source: nn.Module, x: Tensor, size: int) -> Tensor:
    """The materialised ``(B, ΣC, size, size)`` features, without any per-pixel normalisation."""
    return torch.cat(upsampled_maps(source, x, size), dim=1)


def descriptor_maps(source: nn.Module, x: Tensor, size: int, layerwise: bool = True) -> Tensor:
    """Unit-norm ``(B, D, size, size)`` descriptors of normalised inputs ``x`` (see the module docstring)."""
    ups = upsampled_maps(source, x, size)
    if layerwise:
        return torch.cat([F.normalize(u, dim=1) for u in ups], dim=1)
    return F.normalize(torch.cat(ups, dim=1), dim=1)


@torch.no_grad()
def describe(images: Tensor, source: nn.Module, size: int, *, layerwise: bool = True, stats: str = "face",
             pre=None, device=None, batch: int = 32) -> Tensor:
    """Descriptors ``(B, D, size, size)`` of uint8 (or [0, 1]) canvases, unit L2 norm per pixel.

    Args:
        images: ``(B, 3, H, W)`` images or canvases; with ``pre`` a canvas is cut to its centre view first.
        source: a feature source (:func:`~equinv.features.sources.build_source`).
        size: the descriptor grid side S.
        layerwise: normalise each map's block separately (the reference) instead of the whole vector.
        stats: input statistics (``face`` / ``imagenet``).
        device: where to compute (default: the source's device); the result is returned there.
        batch: images per forward pass.
    """
    if device is None:
        p = next(source.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    out = [descriptor_maps(source, prepare_input(images[i : i + batch], pre, stats, device), size, layerwise)
           for i in range(0, images.shape[0], batch)]
    return torch.cat(out)


class SourceDescriptors:
    """``x ↦ descriptor_maps(source, x, size, layerwise)``, the descriptor function matching code takes; its
    :meth:`grid` gives the same descriptors factorised (native maps, nothing of grid size: what
    :func:`~equinv.evaluate.matching.match_errors` streams)."""

    def __init__(self, source: nn.Module, size: int, layerwise: bool = True):
        self.source, self.size, self.layerwise = source, size, layerwise

    def __call__(self, x: Tensor) -> Tensor:
        return descriptor_maps(self.source, x, self.size, self.layerwise)

    def grid(self, x: Tensor) -> GridDescriptors:
        """The descriptors of normalised inputs ``x`` as a :class:`~equinv.features.similarity.GridDescriptors`."""
        return GridDescriptors(self.source.maps(x), self.size, self.layerwise)


def descriptor_fn(source: nn.Module, size: int, layerwise: bool = True) -> SourceDescriptors:
    """The descriptor function of ``source`` at ``size``² (a :class:`SourceDescriptors`)."""
    return SourceDescriptors(source, size, layerwise)

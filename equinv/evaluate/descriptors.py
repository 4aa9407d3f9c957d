"""Dense descriptors for matching, transfer and part analysis: uint8 canvases → ``(B, D, S, S)``.

One place decides how a batch of images becomes per-pixel descriptors (protocol.md §2, §5a):

* ``hypercolumn``: the frozen trunk's hypercolumn bilinear at ``S``² (96 for matching), each layer block
  L2-normalised per pixel (the reference's matching descriptor; ``layerwise=False`` normalises the whole
  vector instead);
* ``projected``: a trained :class:`~equinv.models.projector.Projector` applied to the factorised maps,
  the ``d``-vector L2-normalised as a whole;
* ``nmf``: the non-negative coefficients of a fitted :class:`~equinv.evaluate.parts.PartsModel`
  (Table 4 "NMF-64"), L2-normalised as a whole.

Every output is unit-norm per pixel, so matching is a plain dot product (= cosine).

Input: ``(B, 3, H, W)`` uint8 (or float in [0, 1]) canvases; with ``pre`` the centre ``pre.size`` square is
sliced first (:func:`~equinv.data.dataset.final_view`). Normalisation: face statistics by default, ImageNet
statistics for bird / folder kinds (:func:`input_stats`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from equinv.augment.photometric import FACE_MEAN, FACE_STD, IMAGENET_MEAN, IMAGENET_STD, normalize

KINDS = ("hypercolumn", "projected", "nmf")
#: Dataset kinds whose images are normalised with ImageNet statistics (the reference's bird loaders).
IMAGENET_KINDS = frozenset({"cub", "folder", "bird", "birds", "coco"})


@dataclass(frozen=True)
class DescriptorSpec:
    """How descriptors are computed.

    Attributes:
        kind: ``hypercolumn`` | ``projected`` | ``nmf``.
        size: output grid side S (96 for matching, 48 for regression).
        layerwise: hypercolumn only: L2-normalise each layer block per pixel (reference) instead of
            the whole vector.
        stats: input normalisation, ``face`` or ``imagenet``.
    """

    kind: str = "hypercolumn"
    size: int = 96
    layerwise: bool = True
    stats: str = "face"

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown descriptor kind {self.kind!r}; choose from {', '.join(KINDS)}")
        if self.stats not in ("face", "imagenet"):
            raise ValueError(f"unknown input statistics {self.stats!r}; choose face or imagenet")
        if self.size < 1:
            raise ValueError(f"descriptor grid size must be positive, got {self.size}")

    def as_dict(self) -> dict:
        return asdict(self)


def stats_for_kind(kind: str | None) -> str:
    """``imagenet`` for bird / folder data kinds, ``face`` otherwise."""
    return "imagenet" if (kind or "").lower() in IMAGENET_KINDS else "face"


def input_stats(stats: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (IMAGENET_MEAN, IMAGENET_STD) if stats == "imagenet" else (FACE_MEAN, FACE_STD)


def layerwise_normalize(desc: Tensor, channels: Sequence[int] | None = None) -> Tensor:
    """L2-normalise each channel block of ``(B, C, H, W)`` per pixel (the whole vector when ``channels`` is None)."""
    if channels is None:
        return F.normalize(desc, dim=1)
    return torch.cat([F.normalize(d, dim=1) for d in torch.split(desc, list(channels), dim=1)], dim=1)


def prepare_input(images: Tensor, pre=None, stats: str = "face", device=None) -> Tensor:
    """uint8 / [0, 1] canvases → the centre ``pre.size`` crop (when ``pre``) normalised with ``stats``."""
    x = images
    if pre is not None and x.shape[-1] == pre.canvas and pre.margin:
        m, s = pre.margin, pre.size
        x = x[..., m : m + s, m : m + s]
    x = x.to(device) if device is not None else x
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    mean, std = input_stats(stats)
    return normalize(x, mean, std)


def raw_hypercolumn(hypercolumn, x: Tensor, size: int) -> Tensor:
    """The hypercolumn of normalised inputs at ``size``², without any per-pixel normalisation."""
    maps = hypercolumn.extractor(x)
    ups = [F.interpolate(maps[t], size=(size, size), mode="bilinear", align_corners=False) for t in hypercolumn.taps]
    return torch.cat(ups, dim=1)


def load_projector(path: str | Path, device="cpu"):
    """A trained projector from a ``equinv project`` run dir or its ``.safetensors`` checkpoint."""
    from equinv.models.projector import load_projector as _load

    proj, _ = _load(path, device)
    return proj


@torch.no_grad()
def describe(images: Tensor, hypercolumn, spec: DescriptorSpec | None = None, *, projector=None, parts=None,
             pre=None, device=None, batch: int = 32) -> Tensor:
    """Descriptors ``(B, D, S, S)`` of a batch of canvases, unit L2 norm per pixel.

    Args:
        images: ``(B, 3, H, W)`` uint8 (or float in [0, 1]) images or canvases.
        hypercolumn: a :class:`~equinv.models.hypercolumn.Hypercolumn` (its own ``normalize`` flag is
            ignored: normalisation is decided here).
        spec: kind, grid size, per-layer normalisation, input statistics.
        projector: a trained projector, required for ``kind="projected"``.
        parts: a fitted :class:`~equinv.evaluate.parts.PartsModel` (NMF), required for ``kind="nmf"``.
        pre: the dataset's :class:`~equinv.data.preprocess.Preprocess`; canvases are cut to its centre.
        device: where to compute (default: the trunk's device); the result is returned there.
        batch: images per forward pass.
    """
    spec = spec or DescriptorSpec()
    if spec.kind == "projected" and projector is None:
        raise ValueError("descriptor kind 'projected' needs a projector")
    if spec.kind == "nmf" and parts is None:
        raise ValueError("descriptor kind 'nmf' needs a fitted parts model")
    if device is None:
        p = next(hypercolumn.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    out = []
    for i in range(0, images.shape[0], batch):
        x = prepare_input(images[i : i + batch], pre, spec.stats, device)
        if spec.kind == "projected":
            d = F.normalize(projector(_raw_maps(hypercolumn, x), spec.size), dim=1)
        elif spec.kind == "nmf":
            h = raw_hypercolumn(hypercolumn, x, spec.size)
            if parts.layerwise:
                h = layerwise_normalize(h, hypercolumn.channels)
            d = F.normalize(parts.transform_maps(h), dim=1)
        else:
            h = raw_hypercolumn(hypercolumn, x, spec.size)
            d = layerwise_normalize(h, hypercolumn.channels if spec.layerwise else None)
        out.append(d)
    return torch.cat(out)


def _raw_maps(hypercolumn, x: Tensor) -> list[Tensor]:
    feats = hypercolumn.extractor(x)
    return [feats[t] for t in hypercolumn.taps]

"""Input statistics: which mean / std normalise a dataset's images before a network (one table).

The reference normalises faces with its own face statistics and birds with ImageNet's (protocol.md §1);
equinv decides by the dataset kind of a spec: ImageNet statistics for the bird / generic image kinds, face
statistics for every other kind. A source may impose its own (DVE networks were trained on face statistics),
and a :class:`~equinv.features.spec.FeatureSpec` may fix one explicitly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from equinv.augment.photometric import FACE_MEAN, FACE_STD, IMAGENET_MEAN, IMAGENET_STD, normalize

#: Named input statistics: ``name -> (mean, std)`` per RGB channel.
INPUT_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "face": (FACE_MEAN, FACE_STD),
    "imagenet": (IMAGENET_MEAN, IMAGENET_STD),
}
#: Dataset kinds whose images are normalised with ImageNet statistics (the reference's bird loaders).
IMAGENET_KINDS = frozenset({"cub", "folder", "coco"})


def stats_for_kind(kind: str | None) -> str:
    """``imagenet`` for the bird / generic image kinds (cub, folder, coco), ``face`` otherwise."""
    return "imagenet" if (kind or "").lower() in IMAGENET_KINDS else "face"


def input_stats(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``(mean, std)`` of the named statistics (``face`` or ``imagenet``)."""
    try:
        return INPUT_STATS[name]
    except KeyError:
        raise ValueError(f"unknown input statistics {name!r}; choose from {', '.join(INPUT_STATS)}") from None


def prepare_input(images: Tensor, pre=None, stats: str = "face", device=None) -> Tensor:
    """uint8 (or [0, 1] float) canvases ``(B, 3, H, W)`` → the network input.

    With ``pre`` (a :class:`~equinv.data.preprocess.Preprocess`) a canvas is first cut to its centre
    ``pre.size`` square (the evaluated view); then the batch moves to ``device``, becomes float in [0, 1] and
    is normalised with the named ``stats``.
    """
    x = images
    if pre is not None and x.shape[-1] == pre.canvas and pre.margin:
        m, s = pre.margin, pre.size
        x = x[..., m : m + s, m : m + s]
    x = x.to(device) if device is not None else x
    x = x.float().div(255.0) if x.dtype == torch.uint8 else x.float()
    mean, std = input_stats(stats)
    return normalize(x, mean, std)

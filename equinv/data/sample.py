"""The one sample type shared by every data source, and its pixel-free twin, the record.

Coordinate convention (used everywhere in equinv unless a docstring says otherwise):
landmarks are ``(K, 2)`` float32 **pixel** coordinates, **x then y**, **0-based**, with the centre of
pixel ``(i, j)`` at ``(x=j, y=i)``. Invisible or unannotated points have ``visible=False`` and
coordinates ``(0, 0)``. Boxes are ``(x0, y0, x1, y1)`` in the same frame (edges, not centres).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from equinv.errors import InputError

Box = tuple[float, float, float, float]

#: Crop rules a record may ask for (see :mod:`equinv.data.preprocess`).
CROP_RULES = ("celeba", "whole", "box", "landmarks", "300w")


@dataclass
class Record:
    """One annotated (or unlabeled) image, before any pixel is read.

    Attributes:
        path: image file.
        landmarks: ``(K, 2)`` float32, 0-based pixel x, y in the image as stored on disk.
        visible: ``(K,)`` bool.
        names: ``K`` landmark names (shared by all records of an index).
        where: ``"file:line"`` of the annotation that produced it (for error messages).
        box: optional object/face box ``(x0, y0, x1, y1)`` in pixels.
        crop: the protocol crop rule for this record, one of :data:`CROP_RULES`.
        meta: anything else the format carries (attributes, split, class, ...).
    """

    path: Path
    landmarks: np.ndarray
    visible: np.ndarray
    names: tuple[str, ...]
    where: str
    box: Box | None = None
    crop: str = "whole"
    meta: dict = field(default_factory=dict)

    @property
    def num_landmarks(self) -> int:
        return int(self.landmarks.shape[0])


@dataclass
class Sample:
    """An image with its landmarks: the unit every reader, cache and augmentation speaks.

    Attributes:
        image: ``(H, W, 3)`` uint8 RGB.
        landmarks: ``(K, 2)`` float32 pixel x, y (0-based) in ``image``.
        visible: ``(K,)`` bool.
        names: landmark names.
        source: the file the pixels came from.
        meta: extra information (e.g. attributes, the crop box used).
    """

    image: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    names: tuple[str, ...]
    source: str
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.dtype != np.uint8 or self.image.ndim != 3 or self.image.shape[2] != 3:
            raise ValueError(f"Sample.image must be (H, W, 3) uint8, got {self.image.dtype} {self.image.shape}")
        if self.landmarks.shape != (len(self.names), 2) or self.visible.shape != (len(self.names),):
            raise ValueError("Sample landmarks/visible/names disagree in length")


@dataclass
class LandmarkIndex:
    """What a reader returns: the records of one dataset spec plus what is common to them.

    Attributes:
        kind: the reader's KIND.
        root: the PATH of the spec.
        names: landmark names, ``K`` of them (empty for unlabeled data).
        records: one per sample.
        flip_perm: permutation applied to landmarks under a horizontal flip (left/right swap).
        eyes: indices of the two points used for inter-ocular normalisation, if the format has them.
    """

    kind: str
    root: Path
    names: tuple[str, ...]
    records: list[Record]
    flip_perm: tuple[int, ...] = ()
    eyes: tuple[int, int] | None = None

    def __len__(self) -> int:
        return len(self.records)

    def __post_init__(self) -> None:
        if not self.flip_perm:
            self.flip_perm = flip_permutation(self.names)


def flip_permutation(names: Sequence[str]) -> tuple[int, ...]:
    """Permutation that swaps landmarks named ``left …``/``right …`` (any case, any separator).

    ``perm[i]`` is the index whose point becomes point ``i`` after a horizontal flip.
    """
    import re

    norm = [re.sub(r"[^a-z0-9]+", " ", n.lower()).strip() for n in names]
    lookup = {n: i for i, n in enumerate(norm)}
    perm = []
    for i, n in enumerate(norm):
        toks = n.split(" ")
        swapped = [{"left": "right", "right": "left", "l": "r", "r": "l"}.get(t, t) for t in toks]
        j = lookup.get(" ".join(swapped), i)
        perm.append(j)
    return tuple(perm)


def parse_numbers(tokens: Sequence[str], where_path: str | Path, line: int, what: str = "coordinate") -> np.ndarray:
    """Parse tokens as finite floats, or raise an :class:`InputError` naming file and line."""
    out = np.empty(len(tokens), dtype=np.float64)
    for i, t in enumerate(tokens):
        try:
            v = float(t)
        except ValueError:
            raise InputError(f"non-numeric {what} {t!r} (column {i + 1})", where_path, line) from None
        if not math.isfinite(v):
            raise InputError(f"{what} {t!r} is not finite (column {i + 1})", where_path, line)
        out[i] = v
    return out


def make_record(
    path: Path,
    xy: np.ndarray,
    names: Sequence[str],
    where_path: str | Path,
    line: int,
    visible: np.ndarray | None = None,
    **kwargs,
) -> Record:
    """Build a :class:`Record`, checking shapes and zeroing invisible points."""
    xy = np.asarray(xy, dtype=np.float32).reshape(-1, 2)
    if xy.shape[0] != len(names):
        raise InputError(f"expected {len(names)} landmarks, got {xy.shape[0]}", where_path, line)
    vis = np.ones(len(names), dtype=bool) if visible is None else np.asarray(visible, dtype=bool)
    xy = np.where(vis[:, None], xy, 0.0).astype(np.float32)
    return Record(Path(path), xy, vis, tuple(names), f"{where_path}:{line}", **kwargs)

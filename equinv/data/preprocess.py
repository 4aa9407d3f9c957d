"""Protocol preprocessing: the crop each dataset is evaluated with (protocol.md §6).

Every rule yields a *canvas* region of the source image (a box, possibly beyond the image, where it is
zero-padded) that is resampled to ``canvas × canvas`` pixels. Augmentation works on the canvas; the
final ``size × size`` view is its centre (the reference's "Resize 136, then slice 20 px per side").
With ``context = canvas / size`` = 136/96 (faces) the defaults reproduce the reference exactly:

- ``celeba``: aligned 178×218 image, crop (left 0, top 30, 178×178) → 136 → centre 96.
- ``whole``: the whole image is the canvas (AFLW-style 150×150 crops: 150 → 136 → 96;
  CUB and unlabeled folders, with context 1: whole image → 96, aspect not kept).
- ``300w``: scale so the ground-truth box is 52 px wide, 100×100 crop centred on the box moved
  2 px up, zero-padded → 136 → 96.
- ``box``: a square ``box_scale`` × the longer side of the face/object box, centred on it.
- ``landmarks``: a square ``landmark_scale`` × the longer side of the landmark box, centred on it.

Landmarks follow exactly (pixel-centre convention), ``x' = (x + 0.5 − x0)·canvas/(x1 − x0) − 0.5``
(:func:`equinv.coords.source_to_canvas`).
The reference maps ``x' = x·s`` (corner convention), which differs by ≤ 0.5 px; see docs/protocol_notes.md.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
from PIL import Image

from equinv import coords as C
from equinv.data.sample import CROP_RULES, Box, Record, Sample

#: Canvas/final ratio the reference uses for faces (136/96); birds and folders use 1.
FACE_CONTEXT = 136 / 96
DEFAULT_CONTEXT = {"cub": 1.0, "folder": 1.0, "coco": 1.0}

# Default margins for generic crops, chosen so that a face box / 5-landmark box crop frames MTFL
# faces like the CelebA protocol crop frames CelebA (median inter-ocular distance / canvas side
# = 0.219); measured by `python -m equinv.data.framing` (see docs/data.md).
BOX_SCALE = 2.17
LANDMARK_SCALE = 3.88


@dataclass(frozen=True)
class Preprocess:
    """How records become fixed-size images.

    Attributes:
        size: side of the final (evaluated / trained) view, 96 by default.
        context: canvas side / final side; ``None`` picks the kind's default (136/96 for faces).
        crop: force one crop rule for every record (default: each record's own protocol rule).
        box_scale: square side / longer box side for the ``box`` rule.
        landmark_scale: square side / longer landmark-box side for the ``landmarks`` rule.
    """

    size: int = 96
    context: float | None = None
    crop: str | None = None
    box_scale: float = BOX_SCALE
    landmark_scale: float = LANDMARK_SCALE

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"image size must be at least 8 px, got {self.size}")
        if self.crop is not None and self.crop not in CROP_RULES:
            raise ValueError(f"unknown crop rule {self.crop!r}; choose from {', '.join(CROP_RULES)}")
        if self.context is not None and self.context < 1:
            raise ValueError(f"context must be >= 1, got {self.context}")

    def resolved(self, kind: str) -> Preprocess:
        """A copy with ``context`` filled in for dataset ``kind``."""
        if self.context is not None:
            return self
        ctx = DEFAULT_CONTEXT.get(kind, FACE_CONTEXT)
        return Preprocess(self.size, ctx, self.crop, self.box_scale, self.landmark_scale)

    @property
    def canvas(self) -> int:
        """Side of the stored canvas (136 for faces at size 96)."""
        ctx = FACE_CONTEXT if self.context is None else self.context
        return int(round(self.size * ctx))

    @property
    def margin(self) -> int:
        """Pixels sliced from each side of the canvas to get the final view (20 for faces)."""
        return (self.canvas - self.size) // 2

    def as_dict(self) -> dict:
        return asdict(self)


def _square(cx: float, cy: float, side: float) -> Box:
    return (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2)


def canvas_box(record: Record, size_wh: tuple[int, int], pre: Preprocess) -> Box:
    """The source-image region (pixel edges) that becomes the canvas for ``record``."""
    w, h = size_wh
    rule = pre.crop or record.crop
    if rule == "celeba":
        s = w / 178.0
        return (0.0, 30.0 * s, 178.0 * s, 208.0 * s)
    if rule == "whole":
        return (0.0, 0.0, float(w), float(h))
    if rule == "300w":
        x0, y0, x1, y1 = record.box if record.box is not None else _landmark_box(record, size_wh)
        k = (x1 - x0) / 52.0  # source px per 100-frame px
        return _square((x0 + x1) / 2, (y0 + y1) / 2 - 2.0 * k, 100.0 * k)
    if rule == "box":
        x0, y0, x1, y1 = record.box if record.box is not None else _landmark_box(record, size_wh)
        return _square((x0 + x1) / 2, (y0 + y1) / 2, pre.box_scale * max(x1 - x0, y1 - y0, 1.0))
    if rule == "landmarks":
        x0, y0, x1, y1 = _landmark_box(record, size_wh)
        return _square((x0 + x1) / 2, (y0 + y1) / 2, pre.landmark_scale * max(x1 - x0, y1 - y0, 1.0))
    raise ValueError(f"unknown crop rule {rule!r}")


def _landmark_box(record: Record, size_wh: tuple[int, int]) -> Box:
    if not record.visible.any():
        w, h = size_wh
        return (0.0, 0.0, float(w), float(h))
    p = record.landmarks[record.visible]
    return (float(p[:, 0].min()), float(p[:, 1].min()), float(p[:, 0].max()), float(p[:, 1].max()))


def resample(image: np.ndarray, box: Box, out: int) -> np.ndarray:
    """Crop ``box`` (zero-padded where it leaves the image) and resize to ``out × out``, antialiased."""
    h, w = image.shape[:2]
    x0, y0, x1, y1 = box
    pl, pt = max(0, math.ceil(-x0)), max(0, math.ceil(-y0))
    pr, pb = max(0, math.ceil(x1 - w)), max(0, math.ceil(y1 - h))
    if pl or pt or pr or pb:
        padded = np.zeros((h + pt + pb, w + pl + pr, 3), dtype=np.uint8)
        padded[pt : pt + h, pl : pl + w] = image
        image = padded
    im = Image.fromarray(image)
    res = im.resize((out, out), Image.Resampling.BILINEAR, box=(x0 + pl, y0 + pt, x1 + pl, y1 + pt))
    return np.asarray(res, dtype=np.uint8)


def prepare_landmarks(record: Record, size_wh: tuple[int, int], pre: Preprocess) -> tuple[np.ndarray, Box]:
    """Canvas-frame landmarks of ``record`` (no pixels needed) and the source box used."""
    box = canvas_box(record, size_wh, pre)
    xy = C.source_to_canvas(record.landmarks, box, pre.canvas)
    return np.where(record.visible[:, None], xy, 0.0).astype(np.float32), box


def preprocess(image: np.ndarray, record: Record, pre: Preprocess) -> Sample:
    """Turn a decoded image and its record into a canvas-sized :class:`Sample`."""
    h, w = image.shape[:2]
    xy, box = prepare_landmarks(record, (w, h), pre)
    canvas = resample(image, box, pre.canvas)
    meta = dict(record.meta, box=box)
    return Sample(canvas, xy, record.visible.copy(), record.names, str(record.path), meta)


def center_view(sample: Sample, pre: Preprocess) -> Sample:
    """The final ``size × size`` centre of a canvas sample (the reference's 20-px slice)."""
    m = pre.margin
    img = sample.image[m : m + pre.size, m : m + pre.size]
    xy = np.where(sample.visible[:, None], C.canvas_to_view(sample.landmarks, m), 0.0).astype(np.float32)
    return Sample(np.ascontiguousarray(img), xy, sample.visible, sample.names, sample.source, sample.meta)

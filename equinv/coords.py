"""Coordinate frames and the conversions between them: the one place equinv derives them.

Conventions (everywhere in equinv):

* **Pixel coordinates** ``(x, y)``: x to the right, y down, 0-based, the centre of pixel (row i, column j)
  at ``(x=j, y=i)``; an image ``W`` pixels wide covers ``[−0.5, W − 0.5]`` (pixel edges).
* **Sizes** are an int (a square) or a ``(height, width)`` pair, in torch's order (``images.shape[-2:]``),
  even though points are ``(x, y)``; a ``margin`` pair is ``(top, left)`` in the same order.
* **Normalised coordinates** in ``[−1, 1]`` (one function pair, the convention an explicit argument as
  in kornia and ``grid_sample``):

  - ``align_corners=True``: ``n = 2p/(W − 1) − 1`` (−1 and 1 at the centres of the border pixels): the
    frame of the regression protocol (targets, predictions, IOD, PCK) and of the TPS code;
  - ``align_corners=False``: ``n = (2p + 1)/W − 1`` (−1 and 1 at the outer pixel edges): the frame of
    ``grid_sample`` / ``interpolate`` with ``align_corners=False`` (affine warps, JPEG resizes).
* **Resizing** a frame of side ``W`` to ``W′`` (an image, or an image and a descriptor / feature grid):
  ``p′ = (p + 0.5)·W′/W − 0.5`` (:func:`resize_points`, or :func:`rescale` with the factor ``W′/W``), which
  is how ``F.interpolate(..., align_corners=False)`` moves content.
* **Crop boxes** ``(x0, y0, x1, y1)`` in source pixel *edges*, resampled to a ``C``-pixel canvas:
  ``p′ = (p + 0.5 − x0)·C/(x1 − x0) − 0.5`` (:func:`source_to_canvas`, :func:`canvas_to_source`).
* **The final view** is the centre of the canvas, ``margin`` px sliced per side (136 → 96: 20):
  ``p′ = p − margin`` (:func:`canvas_to_view`, :func:`view_to_canvas`).
* **Horizontal flip**: ``x′ = W − 1 − x`` (:func:`hflip_x`, :func:`hflip_points`).
* **The 70-px DVE frame** of the matching error: ``(n + 1)/2·69`` of the ``align_corners=True``
  normalised coordinate (:func:`to_dve70`).
* **Inside the image**: ``−0.5 ≤ x ≤ W − 0.5`` by default (:func:`inside`, with a margin to tighten or
  widen it); the pixel a point falls in is its rounded coordinate (:func:`nearest_pixel`).

Every function works on torch tensors and NumPy arrays alike (and on Python floats where it is
element-wise), in the input's dtype, with the formulas written once in a fixed floating-point order so
that callers get bit-identical results.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

Size = int | tuple[int, int]
#: Side of the DVE matching frame (errors are reported in pixels of a 70 × 70 image).
DVE_SIDE = 70


# ----------------------------------------------------------------------------- helpers
def _hw(size) -> tuple:
    """``(height, width)`` of an int / scalar (square) or a pair."""
    if isinstance(size, (tuple, list)):
        h, w = size
        return h, w
    return size, size


def _is_pair(size) -> bool:
    return isinstance(size, (tuple, list))


def _stack(x, y):
    """``(..., 2)`` from the x and y parts, torch or NumPy as the inputs are."""
    if isinstance(x, torch.Tensor):
        return torch.stack((x, y), -1)
    return np.stack((x, y), -1)


def _per_axis(points, fx, fy):
    """Apply ``fx`` to the x and ``fy`` to the y coordinates of ``(..., 2)`` points."""
    return _stack(fx(points[..., 0]), fy(points[..., 1]))


# ----------------------------------------------------------------------------- normalised frames
def pix_to_norm(p, size, align_corners: bool = False):
    """Pixel coordinate → normalised ``[−1, 1]`` along one axis of ``size`` pixels (element-wise).

    ``align_corners=True``: ``2p/(size − 1) − 1``; ``False``: ``(2p + 1)/size − 1`` (``grid_sample``).
    ``size`` is a scalar (or a tensor broadcasting against ``p``).
    """
    return 2.0 * p / (size - 1) - 1.0 if align_corners else (2.0 * p + 1.0) / size - 1.0


def norm_to_pix(n, size, align_corners: bool = False):
    """Inverse of :func:`pix_to_norm` (element-wise, one axis of ``size`` pixels)."""
    return (n + 1.0) * (size - 1) / 2.0 if align_corners else ((n + 1.0) * size - 1.0) / 2.0


def norm_scale(size, align_corners: bool = False) -> float:
    """Pixels per normalised unit along an axis of ``size`` pixels: ``(size − 1)/2`` or ``size/2``."""
    return (size - 1) / 2.0 if align_corners else size / 2.0


def norm_affine(size, align_corners: bool = False) -> tuple[float, float]:
    """:func:`pix_to_norm` as an affine map ``n = a·p + b``: returns ``(a, b)`` (e.g. to fold into matrices)."""
    a = 2.0 / (size - 1) if align_corners else 2.0 / size
    return a, pix_to_norm(0.0, size, align_corners)


def points_to_norm(points, size: Size, align_corners: bool = False):
    """``(..., 2)`` pixel points (x, y) of an image of ``size`` (int or ``(H, W)``) → normalised (x, y)."""
    if not _is_pair(size):
        return pix_to_norm(points, size, align_corners)
    h, w = size
    return _per_axis(points, lambda x: pix_to_norm(x, w, align_corners), lambda y: pix_to_norm(y, h, align_corners))


def points_from_norm(n, size: Size, align_corners: bool = False):
    """Inverse of :func:`points_to_norm`: ``(..., 2)`` normalised (x, y) → pixels of an image of ``size``."""
    if not _is_pair(size):
        return norm_to_pix(n, size, align_corners)
    h, w = size
    return _per_axis(n, lambda x: norm_to_pix(x, w, align_corners), lambda y: norm_to_pix(y, h, align_corners))


def to_dve70(px, size: int):
    """Pixels of a square ``size`` frame → the 70-px DVE frame of the matching error, ``(n + 1)/2·69``.

    ``n = 2·px/(size − 1) − 1`` is the ``align_corners=True`` normalised coordinate, so pixel centres map
    centre to centre: 0 → 0 and ``size − 1`` → 69. Element-wise (points ``(..., 2)`` or single axes).
    """
    n = pix_to_norm(px, size, align_corners=True)
    return (n + 1.0) / 2.0 * (DVE_SIDE - 1.0)


# ----------------------------------------------------------------------------- resizing
def rescale(p, scale):
    """Resize by the factor ``scale`` (new side / old side): ``p′ = (p + 0.5)·scale − 0.5`` (element-wise).

    E.g. the centres of the cells of a feature map at ``stride`` input pixels: ``rescale(j, stride)``.
    """
    return (p + 0.5) * scale - 0.5


def resize_points(points, size_from: Size, size_to: Size):
    """``(..., 2)`` pixel points of a frame of ``size_from`` → the same points after resizing to ``size_to``.

    Sizes are ints (square; scalars or broadcasting tensors also work, points may then be single axes)
    or ``(H, W)`` pairs. ``p′ = (p + 0.5)·W′/W − 0.5`` per axis: images, descriptor grids, canvases.
    """
    if not (_is_pair(size_from) or _is_pair(size_to)):
        return rescale(points, size_to / size_from)
    (h0, w0), (h1, w1) = _hw(size_from), _hw(size_to)
    return _per_axis(points, lambda x: rescale(x, w1 / w0), lambda y: rescale(y, h1 / h0))


# ----------------------------------------------------------------------------- crops
def source_to_canvas(points, box: Sequence, canvas: Size):
    """``(..., 2)`` source-image pixels → pixels of the canvas that box ``(x0, y0, x1, y1)`` is resized to.

    The box is in source pixel edges (it may leave the image); ``canvas`` is an int or ``(H, W)``.
    ``p′ = (p + 0.5 − x0)·C/(x1 − x0) − 0.5`` per axis, in the points' dtype. Box entries may be scalars
    or arrays broadcasting against ``points[..., 0]`` (one box per sample).
    """
    x0, y0, x1, y1 = box
    ch, cw = _hw(canvas)
    sx, sy = cw / (x1 - x0), ch / (y1 - y0)
    return _per_axis(points, lambda x: (x + 0.5 - x0) * sx - 0.5, lambda y: (y + 0.5 - y0) * sy - 0.5)


def canvas_to_source(points, box: Sequence, canvas: Size):
    """Inverse of :func:`source_to_canvas`: ``(..., 2)`` canvas pixels → source-image pixels.

    ``p = x0 + (p′ + 0.5)·(x1 − x0)/C − 0.5`` per axis (box and canvas as in :func:`source_to_canvas`).
    """
    x0, y0, x1, y1 = box
    ch, cw = _hw(canvas)
    return _per_axis(points, lambda x: x0 + (x + 0.5) * (x1 - x0) / cw - 0.5,
                     lambda y: y0 + (y + 0.5) * (y1 - y0) / ch - 0.5)


def canvas_to_view(points, margin: int | tuple[int, int]):
    """``(..., 2)`` canvas pixels → pixels of the view left after slicing ``margin`` px off each side.

    ``margin``: an int, or ``(top, left)`` (only the leading margins move points). ``p′ = p − margin``.
    """
    if not _is_pair(margin):
        return points - margin
    top, left = margin
    return _per_axis(points, lambda x: x - left, lambda y: y - top)


def view_to_canvas(points, margin: int | tuple[int, int]):
    """Inverse of :func:`canvas_to_view`: ``p = p′ + margin`` (``margin`` an int or ``(top, left)``)."""
    if not _is_pair(margin):
        return points + margin
    top, left = margin
    return _per_axis(points, lambda x: x + left, lambda y: y + top)


# ----------------------------------------------------------------------------- flips, centres, bounds
def hflip_x(x, width):
    """Mirror x coordinates (any shape) of an image ``width`` px wide: ``x′ = W − 1 − x``."""
    return (width - 1) - x


def hflip_points(points, width, flip_perm: Sequence[int] | None = None):
    """``(..., K, 2)`` points of an image ``width`` px wide mirrored left–right, then relabelled.

    ``flip_perm[i]`` is the index of the point that becomes point ``i`` after the flip (left eye ↔ right
    eye); without it the indices are kept. Flipping twice with the same (involutive) permutation is the
    identity.
    """
    out = _stack(hflip_x(points[..., 0], width), points[..., 1])
    if flip_perm is None:
        return out
    perm = list(flip_perm)
    if len(perm) != points.shape[-2]:
        raise ValueError(f"flip_perm has {len(perm)} entries for {points.shape[-2]} landmarks")
    return out[..., perm, :]


def image_centre(size) -> float:
    """Pixel coordinate of the centre of an axis of ``size`` pixels: ``(size − 1)/2``."""
    return (size - 1) / 2.0


def inside(points, size: Size, margin: float = 0.5):
    """``(...)`` bool: which ``(..., 2)`` points lie in an image of ``size`` (int or ``(H, W)``).

    A point is inside when ``−margin ≤ x ≤ W − 1 + margin`` (same for y): the default 0.5 is the pixel
    edge ``[−0.5, W − 0.5]``, ``margin=0`` demands the span of the pixel centres, a negative margin keeps
    that far from the border. Sizes may be floats (e.g. a feature grid's side in input pixels).
    """
    h, w = _hw(size)
    x, y = points[..., 0], points[..., 1]
    # the upper bound as "edge + (margin − ½)" keeps the default exactly W − 0.5 for non-integer sides too
    return ((x >= -margin) & (x <= w - 0.5 + (margin - 0.5))
            & (y >= -margin) & (y <= h - 0.5 + (margin - 0.5)))


def nearest_pixel(points, size: Size):
    """Integer ``(ix, iy)`` of the pixel centre nearest to ``(..., 2)`` points, clamped into ``size``.

    Rounding is half-to-even (``torch.round`` / ``np.rint``); returns int64 tensors or arrays ``(...)``.
    """
    h, w = _hw(size)
    x, y = points[..., 0], points[..., 1]
    if isinstance(points, torch.Tensor):
        return x.round().long().clamp(0, w - 1), y.round().long().clamp(0, h - 1)
    return (np.clip(np.rint(x).astype(np.int64), 0, w - 1), np.clip(np.rint(y).astype(np.int64), 0, h - 1))

"""Framing: how an input image becomes the square view a landmark model sees, and how points go back.

Coordinates are pixels of the input image as stored on disk: x right, y down, 0-based, pixel centres at
integers (:mod:`equinv.data.sample`). A *canvas box* ``(x0, y0, x1, y1)`` (pixel edges, possibly beyond the
image, zero-padded) is resampled to the ``canvas × canvas`` canvas; the view is its centre ``size × size``
(``margin`` pixels cut on each side) — the protocol preprocessing of :mod:`equinv.data.preprocess`.

* A dataset spec's images are framed by their own protocol crop (as in training).
* A plain image is taken as the object crop: the whole image is the view (``plain_box``; the aspect ratio
  is not kept), except for models trained on ``whole``-cropped data (synthetic faces, AFLW-style crops,
  CUB, folders), whose training views were the centre of the whole image: a plain image is framed the same way.
* A user box (``--boxes``) frames the object as the model's training data framed its boxes
  (:func:`box_canvas`): the training crop rule applied to the given box (``box`` / ``300w``: the object box;
  ``landmarks``: the landmarks' bounding box); for ``whole``-cropped training data the box is framed as a
  whole training image (the canvas), for other data cropped without boxes (aligned CelebA) it is the view.
"""

from __future__ import annotations

import numpy as np

from equinv import coords as C
from equinv.data.preprocess import Preprocess, canvas_box
from equinv.data.sample import Record

Box = tuple[float, float, float, float]


def plain_box(width: int, height: int, pre: Preprocess, crop: str = "box") -> Box:
    """The canvas box of a plain ``width × height`` image: the whole image is the canvas when the model's
    training data was cropped so (``whole``: the view is then its centre, as in training); otherwise the canvas
    whose centre view is exactly the whole image."""
    if crop == "whole":
        return (0.0, 0.0, float(width), float(height))
    fx = (pre.canvas / pre.size - 1.0) / 2.0
    return (-fx * width, -fx * height, width * (1.0 + fx), height * (1.0 + fx))


def box_canvas(box: Box, width: int, height: int, pre: Preprocess, crop: str) -> Box:
    """The canvas box of a user's object box under the training crop rule ``crop``."""
    if crop in ("box", "300w", "landmarks"):
        x0, y0, x1, y1 = box
        rec = Record(path=None, landmarks=np.array([[x0, y0], [x1, y1]], np.float32),
                     visible=np.ones(2, bool), names=("a", "b"), where="--boxes", box=box, crop=crop)
        return canvas_box(rec, (width, height), pre)
    if crop == "whole":  # the box plays the whole training image: it is the canvas, as for a plain image
        return tuple(float(v) for v in box)
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    fx = (pre.canvas / pre.size - 1.0) / 2.0
    return (x0 - fx * w, y0 - fx * h, x1 + fx * w, y1 + fx * h)


def view_to_source(points: np.ndarray, box: Box, pre: Preprocess) -> np.ndarray:
    """``(..., 2)`` view pixels → input-image pixels through ``box`` (see the module docstring)."""
    canvas = C.view_to_canvas(np.asarray(points, np.float64), pre.margin)
    return C.canvas_to_source(canvas, box, pre.canvas)


def norm_to_view(n: np.ndarray, size: int) -> np.ndarray:
    """Normalised ``[-1, 1]`` model outputs → view pixels (``p = (n + 1)·(W − 1)/2``, the regression frame)."""
    return C.points_from_norm(np.asarray(n, np.float64), size, align_corners=True)

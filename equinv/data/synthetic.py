"""A built-in, deterministic synthetic face dataset with exactly known landmarks (KIND ``synthetic``).

Spec form ``synthetic:N[?seed=S&size=P&clutter=0|1]``: ``N`` drawn "faces" of ``P × P`` pixels. Each
face is a head (rotated ellipse) with ears, hair, neck and shoulders, eyes with dark irises, brows, a
nose, lips and a chin dimple, on a textured background with (optionally) random clutter shapes behind
the figure. Faces vary in pose (in-plane rotation, scale, translation, a yaw-like horizontal shift
of the inner features), shape (head aspect, feature spacing and size) and colour (skin, hair, eyes,
lips, clothes, background).

Landmarks (10, in this order; the first five match the MTFL reader, ``eyes = (0, 1)``)::

    left_eye right_eye nose left_mouth right_mouth left_brow right_brow left_ear right_ear chin

"left" is the point on the image's left in the upright, un-rotated face, as in MTFL. Every point is
the exact centre (in the 0-based pixel-centre convention) of a drawn feature: the iris, the nose
tip blob, the brow, the ear, the chin dimple, the dark dot at each end of the mouth slit.

Rendering: every shape is an implicit region evaluated (vectorised, within its bounding box) at 4×4
sub-pixel sample positions ``x = j + (s + 0.5)/4 − 0.5``, ``s = 0..3``, then box-averaged; a shape
centred at ``(cx, cy)`` is therefore rendered centred at exactly ``(cx, cy)``. A foreground mask
(head, hair, ears, neck, shoulders; 0/255, coverage ≥ 1/2) is written beside every image.

Files go to ``cache_root()/synthetic/<key>/``: ``00000.png``…, ``00000_mask.png``…,
``landmarks.csv`` (``file,x1,y1,...,x10,y10`` with a header row) and ``meta.json``; the key encodes
N, seed, size, clutter and :data:`VERSION`. A set is generated once (into a temporary directory that
is renamed into place) and reused afterwards. Image ``i`` depends only on ``(seed, i, size,
clutter)``, so ``synthetic:16`` is the first 16 images of ``synthetic:512``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from equinv import coords as C
from equinv.data.paths import cache_root
from equinv.data.reader_info import ReaderInfo
from equinv.data.sample import LandmarkIndex, flip_permutation, make_record
from equinv.errors import InputError, SkipLog

#: Bump when the drawing changes, so old cached sets are not reused.
VERSION = 1

NAMES: tuple[str, ...] = (
    "left_eye",
    "right_eye",
    "nose",
    "left_mouth",
    "right_mouth",
    "left_brow",
    "right_brow",
    "left_ear",
    "right_ear",
    "chin",
)
EYES = (0, 1)
SS = 4  # supersampling factor per axis

# Fixed colours of the features whose pixel a test may check (RGB, 0..255).
IRIS_COLOURS = np.array([[40, 25, 15], [30, 45, 80], [35, 60, 35], [20, 20, 20]], np.float32)
PUPIL = np.array([5, 5, 5], np.float32)


@dataclass
class Face:
    """Everything drawn for one image (canonical units: inter-ocular distance = 1, y down)."""

    image: np.ndarray  # (H, W, 3) uint8
    mask: np.ndarray  # (H, W) uint8, 0 or 255
    landmarks: np.ndarray  # (K, 2) float32, pixel x, y
    box: tuple[float, float, float, float]  # head + ears box, pixels
    colours: dict  # feature name -> RGB (float, 0..255) drawn at the landmark


class _Canvas:
    """Supersampled RGB + foreground coverage, with shapes given as implicit functions."""

    def __init__(self, size: int, bg: np.ndarray):
        self.size = size
        big = size * SS
        self.rgb = bg  # (big, big, 3) uint8
        self.fg = np.zeros((big, big), bool)
        # small-image coordinate of each supersample centre
        self.coord = C.resize_points(np.arange(big, dtype=np.float32), big, size)

    def _slices(self, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
        big = self.size * SS
        # the supersamples around the box (small-image px → supersample px), one spare on the far side
        j0 = max(0, int(math.floor(C.rescale(x0, SS))))
        j1 = min(big, int(math.ceil(C.rescale(x1, SS))) + 1)
        i0 = max(0, int(math.floor(C.rescale(y0, SS))))
        i1 = min(big, int(math.ceil(C.rescale(y1, SS))) + 1)
        if j0 >= j1 or i0 >= i1:
            return None
        return slice(i0, i1), slice(j0, j1)

    def paint(self, inside_fn, bbox, colour, fg: bool | None = None) -> None:
        """Paint ``colour`` where ``inside_fn(x, y)`` (small-image coords, broadcast grids) is true.

        ``colour`` is an RGB triple or a function ``(x, y) -> (h, w, 3)``. ``fg`` True/False sets the
        foreground mask there; None leaves it.
        """
        sl = self._slices(*bbox)
        if sl is None:
            return
        ys, xs = sl
        x = self.coord[xs][None, :]
        y = self.coord[ys][:, None]
        inside = inside_fn(x, y)
        src = _u8(colour(x, y)) if callable(colour) else _u8(colour)
        np.copyto(self.rgb[ys, xs], src, where=inside[..., None])
        if fg is not None:
            np.copyto(self.fg[ys, xs], fg, where=inside)

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """Box-filtered ``(H, W, 3)`` uint8 image and ``(H, W)`` uint8 foreground coverage (0..255)."""
        img = np.asarray(Image.fromarray(self.rgb).reduce(SS))
        cov = np.asarray(Image.fromarray(self.fg.view(np.uint8) * np.uint8(255)).reduce(SS))
        return img, cov


def _u8(c) -> np.ndarray:
    return np.clip(np.round(np.asarray(c, np.float32)), 0, 255).astype(np.uint8)


def _ellipse(cx, cy, a, b, theta=0.0):
    """Inside test and bounding box of an ellipse (semi-axes a, b, rotated by theta) in image coords."""
    c, s = math.cos(theta), math.sin(theta)

    def inside(x, y):
        dx, dy = x - cx, y - cy
        u = (c * dx + s * dy) / a
        v = (-s * dx + c * dy) / b
        return u * u + v * v <= 1.0

    ex = math.sqrt((a * c) ** 2 + (b * s) ** 2)
    ey = math.sqrt((a * s) ** 2 + (b * c) ** 2)
    return inside, (cx - ex, cy - ey, cx + ex, cy + ey)


def _rect(cx, cy, hw, hh, theta=0.0):
    """Inside test and bounding box of a rotated rectangle (half sides hw, hh)."""
    c, s = math.cos(theta), math.sin(theta)

    def inside(x, y):
        dx, dy = x - cx, y - cy
        return (np.abs(c * dx + s * dy) <= hw) & (np.abs(-s * dx + c * dy) <= hh)

    ex = abs(hw * c) + abs(hh * s)
    ey = abs(hw * s) + abs(hh * c)
    return inside, (cx - ex, cy - ey, cx + ex, cy + ey)


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """HSV in [0, 1] to RGB float32 in 0..255."""
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, np.float32) * 255.0


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Supersampled background (uint8): a random base colour, a linear gradient and smooth noise.

    It is smooth, so it is computed at image resolution and repeated to the supersampled grid.
    """
    big = size
    base = _hsv(rng.uniform(), rng.uniform(0.1, 0.7), rng.uniform(0.25, 0.95))
    g = rng.normal(0, 30, size=3).astype(np.float32)
    ang = rng.uniform(0, 2 * math.pi)
    t = np.linspace(-0.5, 0.5, big, dtype=np.float32)
    ramp = math.cos(ang) * t[None, :] + math.sin(ang) * t[:, None]
    # smooth noise: a small random grid upsampled bilinearly by PIL (C speed)
    k = int(rng.integers(3, 9))
    noise = rng.normal(0, 1, size=(k, k, 3)).astype(np.float32)
    amp = rng.uniform(5, 25)
    up = np.stack(
        [
            np.asarray(Image.fromarray(noise[:, :, c], mode="F").resize((big, big), Image.BILINEAR))
            for c in range(3)
        ],
        axis=2,
    )
    small = _u8(base + ramp[:, :, None] * g + amp * up)
    return np.repeat(np.repeat(small, SS, axis=0), SS, axis=1)


def _clutter(rng: np.random.Generator, cv: _Canvas, size: int) -> None:
    """Random ellipses, bars and stripes behind the figure."""
    for _ in range(int(rng.integers(4, 11))):
        col = _hsv(rng.uniform(), rng.uniform(0.2, 1.0), rng.uniform(0.15, 1.0))
        cx, cy = rng.uniform(-0.1, 1.1, size=2) * size
        kind = rng.integers(0, 3)
        th = rng.uniform(0, math.pi)
        if kind == 0:
            a, b = rng.uniform(0.03, 0.25, size=2) * size
            fn, bb = _ellipse(cx, cy, a, b, th)
        elif kind == 1:
            hw, hh = rng.uniform(0.03, 0.3) * size, rng.uniform(0.01, 0.08) * size
            fn, bb = _rect(cx, cy, hw, hh, th)
        else:  # a patch of stripes
            hw = rng.uniform(0.08, 0.25) * size
            period = rng.uniform(0.02, 0.06) * size
            box_fn, bb = _rect(cx, cy, hw, hw, th)
            c, s = math.cos(th), math.sin(th)

            def fn(x, y, box_fn=box_fn, c=c, s=s, cx=cx, cy=cy, period=period):
                u = c * (x - cx) + s * (y - cy)
                return box_fn(x, y) & (np.mod(u, period) < 0.5 * period)

        cv.paint(fn, bb, col)
    # a few small dots (texture at the scale of facial features, so features are not the only blobs)
    for _ in range(int(rng.integers(3, 9))):
        col = _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0, 1))
        cx, cy = rng.uniform(0, 1, size=2) * size
        r = rng.uniform(0.01, 0.03) * size
        fn, bb = _ellipse(cx, cy, r, r)
        cv.paint(fn, bb, col)


@dataclass
class _Geometry:
    """Pose and shape of one face, in canonical units (inter-ocular distance 1, y down, origin the face
    centre), and the map to image pixels. ``canon`` / ``pts``: every landmark in canonical / image units."""

    size: int
    theta: float  # in-plane rotation
    iod: float  # inter-ocular distance in pixels
    centre: np.ndarray
    yaw: float  # horizontal shift of inner features, IOD units
    head_a: float  # head half-width
    head_b: float  # head half-height
    eye_y: float
    brow_dy: float
    nose_y: float
    mouth_y: float
    mouth_w: float  # half-width between the mouth corners
    chin_y: float
    ear_y: float
    cs: float = field(init=False)  # cos and sin of theta
    sn: float = field(init=False)
    head_cy: float = field(init=False)
    far: float = field(init=False)
    canon: dict[str, tuple[float, float]] = field(init=False)
    pts: dict[str, tuple[float, float]] = field(init=False)

    @classmethod
    def draw(cls, rng: np.random.Generator, size: int) -> _Geometry:
        """Random pose and shape (the first draws of a face's random stream, in this order)."""
        theta = math.radians(rng.uniform(-20, 20))
        iod = size * rng.uniform(0.17, 0.23)
        centre = np.array([0.5, 0.5]) * (size - 1) + rng.uniform(-0.06, 0.06, size=2) * size
        yaw = rng.uniform(-0.18, 0.18)
        head_a = rng.uniform(1.05, 1.3)
        head_b = head_a * rng.uniform(1.2, 1.45)
        eye_y = rng.uniform(-0.35, -0.15)
        brow_dy = rng.uniform(0.28, 0.36)
        nose_y = eye_y + rng.uniform(0.5, 0.65)
        mouth_y = nose_y + rng.uniform(0.35, 0.5)
        mouth_w = rng.uniform(0.33, 0.45)
        chin_y = mouth_y + rng.uniform(0.35, 0.42)
        ear_y = eye_y + rng.uniform(0.15, 0.3)
        return cls(
            size, theta, iod, centre, yaw, head_a, head_b, eye_y, brow_dy, nose_y, mouth_y, mouth_w, chin_y, ear_y
        )

    def __post_init__(self) -> None:
        self.cs, self.sn = math.cos(self.theta), math.sin(self.theta)
        self.head_cy = self.chin_y + 0.12 - self.head_b  # chin dimple sits just above the bottom of the head
        self.far = 1.0 - 0.12 * abs(self.yaw) / 0.18  # mild foreshortening of inner spacing with yaw
        self.canon = self._landmarks()
        self.pts = {k: self.to_img(v) for k, v in self.canon.items()}

    def _landmarks(self) -> dict[str, tuple[float, float]]:
        """Canonical position of every landmark."""
        inner, eye_y, brow_y, mouth_y = self.inner, self.eye_y, self.eye_y - self.brow_dy, self.mouth_y
        ear_dx = self.head_a + 0.1
        return {
            "left_eye": (inner(-0.5), eye_y),
            "right_eye": (inner(0.5), eye_y),
            "nose": (inner(0.0) + 0.6 * self.yaw, self.nose_y),  # the tip protrudes, so it moves further
            "left_mouth": (inner(-self.mouth_w), mouth_y),
            "right_mouth": (inner(self.mouth_w), mouth_y),
            "left_brow": (inner(-0.52), brow_y),
            "right_brow": (inner(0.52), brow_y),
            "left_ear": (-ear_dx, self.ear_y),
            "right_ear": (ear_dx, self.ear_y),
            "chin": (inner(0.0) * 0.6, self.chin_y),
        }

    def inner(self, x: float) -> float:
        """Canonical x of an inner feature (eyes, nose, mouth) after the yaw shift."""
        return x * self.far + self.yaw

    def to_img(self, p) -> tuple[float, float]:
        """Canonical ``(x, y)`` to image pixels (0-based pixel centres)."""
        x, y = p
        return (
            self.centre[0] + self.iod * (self.cs * x - self.sn * y),
            self.centre[1] + self.iod * (self.sn * x + self.cs * y),
        )

    def ell(self, name_or_xy, a: float, b: float, extra_theta: float = 0.0):
        """Ellipse (semi-axes in IOD units) centred on a landmark name or a canonical point, rotated with the face."""
        cx, cy = self.pts[name_or_xy] if isinstance(name_or_xy, str) else self.to_img(name_or_xy)
        return _ellipse(cx, cy, a * self.iod, b * self.iod, self.theta + extra_theta)


@dataclass
class _Palette:
    """Colours of one face (RGB float32, 0..255)."""

    skin: np.ndarray
    ear: np.ndarray
    nose: np.ndarray
    chin: np.ndarray
    hair: np.ndarray
    brow: np.ndarray
    iris: np.ndarray
    sclera: np.ndarray
    lips: np.ndarray
    mouth_line: np.ndarray
    clothes: np.ndarray

    @classmethod
    def draw(cls, rng: np.random.Generator) -> _Palette:
        """Random colours (drawn right after the geometry, in this order)."""
        skin = _hsv(rng.uniform(0.02, 0.1), rng.uniform(0.2, 0.6), rng.uniform(0.45, 0.97))
        ear = skin * 0.76
        nose = skin * rng.uniform(0.6, 0.72)
        chin = skin * 0.7
        hair = _hsv(rng.uniform(0.0, 0.12), rng.uniform(0.2, 0.9), rng.uniform(0.05, 0.6))
        if rng.uniform() < 0.15:  # the odd dyed or grey hair
            hair = _hsv(rng.uniform(), rng.uniform(0, 0.8), rng.uniform(0.3, 0.9))
        brow = hair * 0.6
        iris = IRIS_COLOURS[int(rng.integers(len(IRIS_COLOURS)))]
        sclera = np.array([240, 238, 230], np.float32) * rng.uniform(0.85, 1.0)
        lips = _hsv(rng.uniform(-0.03, 0.03) % 1.0, rng.uniform(0.45, 0.8), rng.uniform(0.45, 0.8))
        mouth_line = lips * 0.35
        clothes = _hsv(rng.uniform(), rng.uniform(0, 1), rng.uniform(0.1, 0.9))
        return cls(skin, ear, nose, chin, hair, brow, iris, sclera, lips, mouth_line, clothes)

    def at_landmarks(self) -> dict:
        """Feature name -> the colour drawn at its landmark (plus ``iris`` and ``skin``), for :class:`Face`."""
        return {
            "left_eye": PUPIL,
            "right_eye": PUPIL,
            "nose": self.nose,
            "left_mouth": self.mouth_line,
            "right_mouth": self.mouth_line,
            "left_brow": self.brow,
            "right_brow": self.brow,
            "left_ear": self.ear,
            "right_ear": self.ear,
            "chin": self.chin,
            "iris": self.iris,
            "skin": self.skin,
        }


def _draw_body(cv: _Canvas, g: _Geometry, pal: _Palette) -> None:
    """Shoulders, neck and ears (foreground), all behind the head."""
    fn, bb = g.ell((0.0, g.chin_y + 1.9), 2.6, 1.15)
    cv.paint(fn, bb, pal.clothes, fg=True)
    nck = g.to_img((0.0, g.chin_y + 0.4))
    fn, bb = _rect(nck[0], nck[1], 0.55 * g.iod, 0.7 * g.iod, g.theta)
    cv.paint(fn, bb, pal.skin * 0.8, fg=True)
    for e in ("left_ear", "right_ear"):
        fn, bb = g.ell(e, 0.17, 0.3)
        cv.paint(fn, bb, pal.ear, fg=True)


def _draw_head(cv: _Canvas, g: _Geometry, pal: _Palette, rng: np.random.Generator) -> tuple:
    """Head with soft shading, then the hair over its top (foreground); returns the head's bounding box."""
    cs, sn, iod = g.cs, g.sn, g.iod
    hc = g.to_img((0.0, g.head_cy))
    head_in, head_bb = _ellipse(hc[0], hc[1], g.head_a * iod, g.head_b * iod, g.theta)
    light = rng.uniform(-1, 1, size=2)

    def shaded(x, y):
        u = ((x - hc[0]) * cs + (y - hc[1]) * sn) / (g.head_a * iod)
        v = (-(x - hc[0]) * sn + (y - hc[1]) * cs) / (g.head_b * iod)
        f = 1.0 - 0.12 * (u * u + v * v) + 0.06 * (light[0] * u + light[1] * v)
        return pal.skin[None, None, :] * f[..., None]

    cv.paint(head_in, head_bb, shaded, fg=True)
    hair_line = g.eye_y - g.brow_dy - rng.uniform(0.35, 0.6)
    hair_in, hair_bb = _ellipse(hc[0], hc[1], g.head_a * 1.07 * iod, g.head_b * 1.06 * iod, g.theta)

    def hair_fn(x, y):
        v = -(x - g.centre[0]) * sn + (y - g.centre[1]) * cs  # canonical y * iod
        return hair_in(x, y) & (v <= hair_line * iod)

    cv.paint(hair_fn, hair_bb, pal.hair, fg=True)
    return head_bb


def _draw_eyes_and_brows(cv: _Canvas, g: _Geometry, pal: _Palette) -> None:
    """Brows, then each eye: sclera, iris, and the pupil centred on the eye landmark."""
    for side in ("left", "right"):
        fn, bb = g.ell(f"{side}_brow", 0.24, 0.07)
        cv.paint(fn, bb, pal.brow)
        fn, bb = g.ell(f"{side}_eye", 0.22, 0.11)
        cv.paint(fn, bb, pal.sclera)
        fn, bb = g.ell(f"{side}_eye", 0.095, 0.095)
        cv.paint(fn, bb, pal.iris)
        fn, bb = g.ell(f"{side}_eye", 0.05, 0.05)
        cv.paint(fn, bb, PUPIL)


def _draw_nose(cv: _Canvas, g: _Geometry, pal: _Palette) -> None:
    """A faint ridge from between the eyes to the tip, then the tip blob centred on the landmark."""
    top = np.array([g.inner(0.0) + 0.2 * g.yaw, g.eye_y + 0.12])
    tip = np.array(g.canon["nose"])
    mid = (top + tip) / 2
    d = tip - top
    ridge_len = float(np.hypot(*d)) / 2
    ridge_th = math.atan2(d[1], d[0])
    mi = g.to_img(mid)
    fn, bb = _rect(mi[0], mi[1], ridge_len * g.iod, 0.035 * g.iod, g.theta + ridge_th)
    cv.paint(fn, bb, pal.skin * 0.88)
    fn, bb = g.ell("nose", 0.16, 0.1)
    cv.paint(fn, bb, pal.nose)


def _draw_mouth_and_chin(cv: _Canvas, g: _Geometry, pal: _Palette, rng: np.random.Generator) -> None:
    """Lips reaching 0.12 IOD beyond the corners, a dark slit from corner to corner, a dark dot centred on
    each corner landmark, and the chin dimple."""
    iod, left, right = g.iod, g.canon["left_mouth"][0], g.canon["right_mouth"][0]
    mc = g.to_img(((left + right) / 2, g.mouth_y))
    half = (right - left) / 2
    fn, bb = _ellipse(mc[0], mc[1], (half + 0.12) * iod, rng.uniform(0.1, 0.15) * iod, g.theta)
    cv.paint(fn, bb, pal.lips)
    fn, bb = _ellipse(mc[0], mc[1], half * iod, 0.02 * iod + 0.3, g.theta)
    cv.paint(fn, bb, pal.mouth_line)
    for side in ("left", "right"):
        fn, bb = g.ell(f"{side}_mouth", 0.07, 0.07)
        cv.paint(fn, bb, pal.mouth_line)
    fn, bb = g.ell("chin", 0.12, 0.07)
    cv.paint(fn, bb, pal.chin)


def _face_box(g: _Geometry, head_bb: tuple) -> tuple[float, float, float, float]:
    """Box around the head ellipse and the ears, in the edges convention (``x0, y0, x1, y1``)."""
    ex0, ey0, ex1, ey1 = head_bb
    for e in ("left_ear", "right_ear"):
        _, (a0, b0, a1, b1) = g.ell(e, 0.17, 0.3)
        ex0, ey0, ex1, ey1 = min(ex0, a0), min(ey0, b0), max(ex1, a1), max(ey1, b1)
    return (ex0 + 0.5, ey0 + 0.5, ex1 + 0.5, ey1 + 0.5)  # centres -> edges convention


def render_face(seed: int, index: int, size: int = 128, clutter: bool = True) -> Face:
    """Draw image ``index`` of the set with ``seed``; deterministic in ``(seed, index, size, clutter)``.

    The random stream is consumed in a fixed order (geometry, colours, background, clutter, head light,
    hair line, lip height, pixel noise): keep it, or bump :data:`VERSION`.
    """
    rng = np.random.default_rng([int(seed), int(index), 0x5EED])
    g = _Geometry.draw(rng, size)
    pal = _Palette.draw(rng)
    cv = _Canvas(size, _background(rng, size))
    if clutter:
        _clutter(rng, cv, size)
    _draw_body(cv, g, pal)
    head_bb = _draw_head(cv, g, pal, rng)
    _draw_eyes_and_brows(cv, g, pal)
    _draw_nose(cv, g, pal)
    _draw_mouth_and_chin(cv, g, pal, rng)

    img, cov = cv.finish()
    image = _u8(img + rng.normal(0, 2.0, size=img.shape).astype(np.float32))
    mask = np.where(cov >= 128, 255, 0).astype(np.uint8)
    lm = np.array([g.pts[n] for n in NAMES], np.float32)
    return Face(image, mask, lm, _face_box(g, head_bb), pal.at_landmarks())


def _key(n: int, seed: int, size: int, clutter: bool) -> str:
    return f"n{n}_seed{seed}_size{size}_clutter{int(clutter)}_v{VERSION}"


#: The largest synthetic set (every image is generated into the decoded-image cache first).
MAX_IMAGES = 1_000_000


def _check_args(n: int, seed: int, size: int) -> None:
    if not 1 <= n <= MAX_IMAGES:  # every image is generated into the cache: a typo must not fill the disk
        raise InputError(f"synthetic: the number of images must be 1..{MAX_IMAGES}, got {n}")
    if size < 32 or size > 1024:
        raise InputError(f"synthetic: size must be between 32 and 1024 px, got {size}")
    if seed < 0:
        raise InputError(f"synthetic: seed must be >= 0, got {seed}")


def generate_synthetic(
    n: int, seed: int = 0, size: int = 128, clutter: bool = True, root: Path | None = None
) -> Path:
    """Generate (once) and return the directory of a synthetic set.

    Args:
        n: number of images.
        seed: random seed; image ``i`` depends only on ``(seed, i, size, clutter)``.
        size: image side in pixels.
        clutter: draw random shapes behind the figure.
        root: parent directory (default ``cache_root()/synthetic``).

    Returns:
        The directory holding the PNGs, masks, ``landmarks.csv`` and ``meta.json``.
    """
    _check_args(n, seed, size)
    parent = Path(root) if root is not None else cache_root() / "synthetic"
    final = parent / _key(n, seed, size, clutter)
    if (final / "meta.json").is_file():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=parent))
    try:
        t0 = time.perf_counter()
        rows = []
        for i in range(n):
            face = render_face(seed, i, size, clutter)
            name = f"{i:05d}.png"
            Image.fromarray(face.image).save(tmp / name, compress_level=1)
            Image.fromarray(face.mask, mode="L").save(tmp / f"{i:05d}_mask.png", compress_level=1)
            rows.append(
                [name] + [f"{v:.4f}" for v in face.landmarks.reshape(-1)] + [f"{v:.3f}" for v in face.box]
            )
        with open(tmp / "landmarks.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            header = ["file"]
            for k in range(1, len(NAMES) + 1):
                header += [f"x{k}", f"y{k}"]
            w.writerow(header + ["box_x0", "box_y0", "box_x1", "box_y1"])
            w.writerows(rows)
        meta = {
            "kind": "synthetic",
            "version": VERSION,
            "n": n,
            "seed": seed,
            "size": size,
            "clutter": int(clutter),
            "names": list(NAMES),
            "eyes": list(EYES),
            "flip_perm": list(flip_permutation(NAMES)),
            "convention": "0-based pixel centres, x then y",
            "seconds": round(time.perf_counter() - t0, 2),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
        try:
            os.rename(tmp, final)
        except OSError:
            if not (final / "meta.json").is_file():  # not a lost race: a real failure
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def load_synthetic(directory: Path, log: SkipLog | None = None) -> LandmarkIndex:
    """Read a generated directory back into a :class:`LandmarkIndex` (crop ``whole``)."""
    log = log if log is not None else SkipLog()
    directory = Path(directory)
    csv_path = directory / "landmarks.csv"
    k = len(NAMES)
    records = []
    with open(csv_path, newline="", encoding="utf-8") as fh:
        for line, row in enumerate(csv.reader(fh), start=1):
            if line == 1:
                continue
            if len(row) != 1 + 2 * k + 4:
                log.bad(InputError(f"expected {1 + 2 * k + 4} columns, got {len(row)}", csv_path, line))
                continue
            xy = np.array([float(v) for v in row[1 : 1 + 2 * k]], np.float32).reshape(k, 2)
            box = tuple(float(v) for v in row[1 + 2 * k :])
            png = directory / row[0]
            mask = png.with_name(png.stem + "_mask.png")
            records.append(
                make_record(png, xy, NAMES, csv_path, line, crop="whole", box=box, meta={"mask": str(mask)})
            )
    return LandmarkIndex("synthetic", directory, NAMES, records, flip_permutation(NAMES), EYES)


def synthetic_index(n: int = 512, seed: int = 0, size: int = 128, clutter: bool = True) -> LandmarkIndex:
    """Generate (once) and read a synthetic set: :func:`generate_synthetic` + :func:`load_synthetic`."""
    return load_synthetic(generate_synthetic(n, seed, size, clutter))


def _int_option(options: dict, key: str, default: int) -> int:
    raw = options.pop(key, None)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise InputError(f"synthetic: option {key}={raw!r} is not an integer") from None


def read_synthetic(path: Path, options: dict, log: SkipLog) -> LandmarkIndex:
    """``synthetic:N``: N generated faces with exact landmarks (generated once into the cache)."""
    try:
        n = int(str(path))
    except ValueError:
        raise InputError(
            f"synthetic: PATH must be the number of images (e.g. synthetic:512), got {str(path)!r}"
        ) from None
    seed = _int_option(options, "seed", 0)
    size = _int_option(options, "size", 128)
    clutter = _int_option(options, "clutter", 1)
    if clutter not in (0, 1):
        raise InputError(f"synthetic: option clutter must be 0 or 1, got {clutter}")
    _check_args(n, seed, size)
    return load_synthetic(generate_synthetic(n, seed, size, bool(clutter)), log)


READER = ReaderInfo(
    kind="synthetic",
    fn=read_synthetic,
    help="built-in synthetic faces with exact landmarks; PATH is the number of images (synthetic:512)",
    options={
        "seed": "random seed (default 0)",
        "size": "image side in pixels (default 128)",
        "clutter": "1 draws random shapes behind the face, 0 a plain textured background (default 1)",
    },
    path_must_exist=False,
)

"""Tiny on-disk fixtures shared by the data tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from equinv.data.sample import LandmarkIndex, make_record

NAMES = ("left_eye", "right_eye", "nose")


def dot_image(w: int, h: int, pts: np.ndarray, sigma: float = 1.5) -> np.ndarray:
    """Black ``(h, w, 3)`` uint8 image with one Gaussian dot per point, each in its own channel."""
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.zeros((h, w, 3), np.float32)
    for i, (x, y) in enumerate(pts):
        img[:, :, i % 3] += np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))
    return (np.clip(img, 0, 1) * 255).round().astype(np.uint8)


def dot_centroid(img: np.ndarray, channel: int, near: np.ndarray, r: int = 5) -> np.ndarray:
    """Intensity-weighted centroid of ``channel`` within ``r`` px of ``near`` (x, y)."""
    h, w = img.shape[:2]
    x0, y0 = int(round(near[0])), int(round(near[1]))
    ys, xs = slice(max(0, y0 - r), min(h, y0 + r + 1)), slice(max(0, x0 - r), min(w, x0 + r + 1))
    patch = img[ys, xs, channel].astype(np.float64)
    yy, xx = np.mgrid[ys, xs]
    m = patch.sum()
    return np.array([(patch * xx).sum() / m, (patch * yy).sum() / m])


def write_index(
    tmp: Path, pts_list: list[np.ndarray], size=(80, 60), crop="whole", box=None
) -> LandmarkIndex:
    """Write one PNG per point set and return an index of records over them."""
    recs = []
    for i, pts in enumerate(pts_list):
        p = tmp / f"img{i:03d}.png"
        Image.fromarray(dot_image(size[0], size[1], pts)).save(p)
        recs.append(make_record(p, pts, NAMES, tmp / "list.txt", i + 1, crop=crop, box=box))
    return LandmarkIndex("test", tmp, NAMES, recs)

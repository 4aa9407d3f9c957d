"""Figures of dense representations (PIL only): PCA maps, NMF part maps, landmark matches.

Every figure is a grid of square cells of ``cell`` px separated by :data:`PAD` px, with a header strip of
:data:`LABEL_H` px naming the columns; :func:`figure_size` gives the PNG size for a grid. Colours: PCA maps
show the first three components as R, G, B (after the model's fixed per-component range, so colours are
comparable between images); part maps colour component ``k`` with :func:`landmark_colour` ``(k)``;
matches colour landmark ``k`` with the same palette (filled dot = prediction, ring = truth, a line joins
them).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from equinv import coords as C
from equinv.outputs import save_image
from equinv.viz.contact_sheet import BG, FG, LABEL_H, PAD, _font, batch_to_uint8, landmark_colour

# -- helpers ---------------------------------------------------------------------------------------------


def _np(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_hwc_uint8(images) -> np.ndarray:
    """``(B, 3, H, W)`` (uint8 or float [0, 1], tensor or array) or ``(B, H, W, 3)`` uint8 → ``(B, H, W, 3)`` uint8."""
    a = _np(images)
    if a.ndim == 3:
        a = a[None]
    if a.ndim == 4 and a.shape[-1] == 3 and a.shape[1] != 3:
        if a.dtype != np.uint8:
            a = np.clip(np.round(a.astype(np.float32) * 255), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(a)
    return batch_to_uint8(a)


def figure_size(rows: int, cols: int, cell: int, header: bool = True) -> tuple[int, int]:
    """PNG ``(width, height)`` of a ``rows × cols`` grid of ``cell``-px cells."""
    return cols * cell + (cols + 1) * PAD, rows * cell + (rows + 1) * PAD + (LABEL_H if header else 0)


def _canvas(rows: int, cols: int, cell: int, header: Sequence[str] | None) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    w, h = figure_size(rows, cols, cell, header is not None)
    im = Image.new("RGB", (w, h), BG)
    draw = ImageDraw.Draw(im)
    if header is not None:
        font = _font()
        for c, text in enumerate(header):
            if text:
                draw.text((PAD + c * (cell + PAD) + 2, 1), str(text), fill=FG, font=font)
    return im, draw


def _origin(r: int, c: int, cell: int, header: bool) -> tuple[int, int]:
    return PAD + c * (cell + PAD), PAD + r * (cell + PAD) + (LABEL_H if header else 0)


def _paste(im: Image.Image, arr: np.ndarray, r: int, c: int, cell: int, header: bool, nearest: bool = False) -> float:
    """Paste an ``(H, W, 3)`` uint8 array into cell (r, c); returns the scale factor cell / W."""
    src = Image.fromarray(arr)
    if src.size != (cell, cell):
        src = src.resize((cell, cell), Image.NEAREST if nearest else Image.BILINEAR)
    im.paste(src, _origin(r, c, cell, header))
    return cell / arr.shape[1]


def _dot(draw, x: float, y: float, rad: float, colour, ring: bool = False) -> None:
    box = (x - rad, y - rad, x + rad, y + rad)
    if ring:
        draw.ellipse(box, outline=colour, width=max(1, int(round(rad / 2))))
    else:
        draw.ellipse(box, fill=colour, outline=(255, 255, 255))


def _save(im: Image.Image, path: str | Path) -> Path:
    return save_image(im, path)


# -- PCA -------------------------------------------------------------------------------------------------


def pca_figure(images, maps, path: str | Path, cell: int = 96, title_components: bool = True) -> Path:
    """One row per image: the image, the first 3 components as RGB, then each component in grey.

    Args:
        images: ``B`` images (see :func:`to_hwc_uint8`), the views the maps were computed on.
        maps: ``(B, c, S, S)`` component maps already scaled to [0, 1] (``PartsModel.scaled``); c ≥ 1.
    """
    imgs = to_hwc_uint8(images)
    m = np.clip(_np(maps).astype(np.float32), 0, 1)
    b, c = m.shape[:2]
    k = min(c, 3)
    header = ["image", "PCA 1-3 RGB" if k == 3 else "PCA RGB"] + ([f"PC {i + 1}" for i in range(k)]
                                                                  if title_components else [""] * k)
    im, _ = _canvas(b, 2 + k, cell, header)
    for i in range(b):
        _paste(im, imgs[i], i, 0, cell, True)
        rgb = np.zeros(m.shape[2:] + (3,), np.float32)
        rgb[..., :k] = m[i, :k].transpose(1, 2, 0)
        _paste(im, (rgb * 255).round().astype(np.uint8), i, 1, cell, True)
        for j in range(k):
            g = (m[i, j] * 255).round().astype(np.uint8)
            _paste(im, np.repeat(g[..., None], 3, -1), i, 2 + j, cell, True)
    return _save(im, path)


# -- NMF parts -------------------------------------------------------------------------------------------


def part_colours(labels: np.ndarray) -> np.ndarray:
    """``(..., S, S)`` integer part labels → ``(..., S, S, 3)`` uint8 in the fixed palette."""
    lab = _np(labels).astype(np.int64)
    lut = np.array([landmark_colour(k) for k in range(int(lab.max(initial=0)) + 1)], np.uint8)
    return lut[lab]


def blend_parts(image: np.ndarray, labels, alpha: float = 0.55, strength=None) -> np.ndarray:
    """Part colours blended over an ``(H, W, 3)`` uint8 image (labels resized nearest to the image).

    ``strength`` ``(S, S)`` in [0, 1] (e.g. the winning coefficient over its range) scales the opacity
    per pixel, so weakly assigned pixels show the image.
    """
    h, w = image.shape[:2]
    col = Image.fromarray(part_colours(labels)).resize((w, h), Image.NEAREST)
    a = np.full((h, w, 1), alpha, np.float32)
    if strength is not None:
        s = Image.fromarray((np.clip(_np(strength), 0, 1) * 255).astype(np.uint8)).resize((w, h), Image.BILINEAR)
        a = a * (np.asarray(s, np.float32)[..., None] / 255.0)
    out = image.astype(np.float32) * (1 - a) + np.asarray(col, np.float32) * a
    return out.round().astype(np.uint8)


def parts_figure(images, labels, path: str | Path, cell: int = 96, cols: int = 4, strength=None,
                 alpha: float = 0.55) -> Path:
    """Pairs (image, part map blended over it), ``cols`` pairs per row.

    Args:
        labels: ``(B, S, S)`` argmax part per pixel (``parts.part_labels``).
        strength: optional ``(B, S, S)`` opacity in [0, 1].
    """
    imgs = to_hwc_uint8(images)
    lab = _np(labels)
    b = imgs.shape[0]
    cols = max(1, min(cols, b))
    rows = (b + cols - 1) // cols
    im, _ = _canvas(rows, 2 * cols, cell, ["image", "parts"] * cols)
    for i in range(b):
        r, c = divmod(i, cols)
        _paste(im, imgs[i], r, 2 * c, cell, True)
        s = None if strength is None else _np(strength)[i]
        _paste(im, blend_parts(imgs[i], lab[i], alpha, s), r, 2 * c + 1, cell, True)
    return _save(im, path)


# -- matches ---------------------------------------------------------------------------------------------


def match_figure(reference, ref_landmarks, targets, predicted, path: str | Path, truth=None, truth_visible=None,
                 ref_visible=None, cell: int = 128, cols: int = 5, labels: Sequence[str] | None = None) -> Path:
    """The reference with its landmarks in the first cell, then every target with its transferred points.

    Args:
        reference: one image ``(3, H, W)`` / ``(H, W, 3)``; ``ref_landmarks`` ``(K, 2)`` px in it.
        targets: ``N`` images; ``predicted`` ``(N, K, 2)`` px in them.
        truth, truth_visible: optional ``(N, K, 2)`` true points and ``(N, K)`` visibility: drawn as rings,
            joined to the prediction by a line of the landmark's colour.
        ref_visible: ``(K,)`` reference landmarks to use (others are not drawn anywhere).
        labels: optional cell captions after the reference (e.g. errors); drawn in the header strip of
            the first row only, so keep them short. Default: ``reference``, ``#0``, ``#1`` ...
    """
    ref = to_hwc_uint8(reference)[0]
    tg = to_hwc_uint8(targets)
    rl = _np(ref_landmarks).astype(np.float32)
    pr = _np(predicted).astype(np.float32)
    n, k = pr.shape[:2]
    rv = np.ones(k, bool) if ref_visible is None else _np(ref_visible).astype(bool)
    tr = None if truth is None else _np(truth).astype(np.float32)
    tv = None if tr is None else (np.ones((n, k), bool) if truth_visible is None else _np(truth_visible).astype(bool))
    total = n + 1
    cols = max(1, min(cols, total))
    rows = (total + cols - 1) // cols
    head = ["reference"] + [str(s) for s in (labels or [f"#{i}" for i in range(n)])]
    im, draw = _canvas(rows, cols, cell, head[:cols])
    rad = max(2.0, cell / 48)

    def place(img: np.ndarray, idx: int) -> tuple[int, int, float]:
        r, c = divmod(idx, cols)
        s = _paste(im, img, r, c, cell, True)
        ox, oy = _origin(r, c, cell, True)
        return ox, oy, s

    ox, oy, s = place(ref, 0)
    for j in range(k):
        if rv[j]:
            _dot(draw, ox + C.rescale(rl[j, 0], s), oy + C.rescale(rl[j, 1], s), rad, landmark_colour(j))
    for i in range(n):
        ox, oy, s = place(tg[i], i + 1)
        for j in range(k):
            if not rv[j]:
                continue
            col = landmark_colour(j)
            px, py = ox + C.rescale(pr[i, j, 0], s), oy + C.rescale(pr[i, j, 1], s)
            if tr is not None and tv[i, j]:
                tx, ty = ox + C.rescale(tr[i, j, 0], s), oy + C.rescale(tr[i, j, 1], s)
                draw.line((tx, ty, px, py), fill=col, width=1)
                _dot(draw, tx, ty, rad + 1, col, ring=True)
            _dot(draw, px, py, rad, col)
    return _save(im, path)

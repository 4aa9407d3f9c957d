"""Contact sheets: a grid of images with their landmarks drawn on, written as one PNG (PIL only).

Every landmark index gets a fixed colour from :data:`PALETTE` (the same index has the same colour on
every cell and every sheet); invisible points are not drawn. Landmarks use the equinv convention
(0-based pixel centres, x then y) and are mapped through the same scaling as the pixels:
``x' = (x + 0.5)·s − 0.5``.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from equinv.outputs import save_image

#: Qualitative palette (Tableau 10, then lighter/darker variants); index k -> RGB.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
    (174, 199, 232),
    (255, 187, 120),
    (152, 223, 138),
    (255, 152, 150),
    (197, 176, 213),
    (196, 156, 148),
    (247, 182, 210),
    (199, 199, 199),
    (219, 219, 141),
    (158, 218, 229),
)

BG = (255, 255, 255)
FG = (0, 0, 0)
PAD = 4
LABEL_H = 14


def landmark_colour(k: int) -> tuple[int, int, int]:
    """Colour of landmark index ``k``: :data:`PALETTE`, then golden-ratio hues beyond it."""
    if k < len(PALETTE):
        return PALETTE[k]
    h = (0.11 + 0.618034 * k) % 1.0
    r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95)
    return int(r * 255), int(g * 255), int(b * 255)


@dataclass
class _Item:
    image: np.ndarray
    landmarks: np.ndarray
    visible: np.ndarray
    names: tuple[str, ...]
    source: str = ""


def _font(px: int = 11) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)
    except TypeError:  # Pillow < 10.1: bitmap font only
        return ImageFont.load_default()


def _shorten(text: str, font, width: float, draw: ImageDraw.ImageDraw) -> str:
    """``text`` cut in the middle (with …) so it fits in ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)
    best = "…"
    while lo <= hi:  # longest kept length that fits
        mid = (lo + hi) // 2
        head = (mid + 1) // 2
        tail = mid // 2
        cand = text[:head] + "…" + (text[len(text) - tail :] if tail else "")
        if draw.textlength(cand, font=font) <= width:
            best, lo = cand, mid + 1
        else:
            hi = mid - 1
    return best


def marker_radius(cell: int) -> int:
    """Radius in pixels of the landmark markers on a ``cell``-pixel cell."""
    return max(2, int(round(cell / 50)))


def cell_geometry(h: int, w: int, cell: int) -> tuple[float, int, int]:
    """Scale and offsets (x, y) that fit an ``h × w`` image into a ``cell × cell`` square, centred."""
    s = cell / max(h, w)
    nw, nh = max(1, int(round(w * s))), max(1, int(round(h * s)))
    return s, (cell - nw) // 2, (cell - nh) // 2


def _longest_names(samples: Sequence) -> tuple[str, ...]:
    """The longest landmark-name list among ``samples`` (the legend's names)."""
    names: tuple[str, ...] = ()
    for s in samples:
        if len(s.names) > len(names):
            names = tuple(s.names)
    return names


def _legend_layout(names: Sequence[str], font, r: int, width: int) -> list[list[int]]:
    """Landmark indices per legend line: as many ``k:name`` entries per line as fit in ``width``."""
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lines: list[list[int]] = []
    x, line = PAD, []
    for k, nm in enumerate(names):
        w = 2 * r + 4 + probe.textlength(f"{k}:{nm}", font=font) + 10
        if line and x + w > width - PAD:
            lines.append(line)
            x, line = PAD, []
        line.append(k)
        x += w
    lines.append(line)
    return lines


def _draw_markers(
    draw: ImageDraw.ImageDraw,
    s,
    corner: tuple[int, int],
    origin: tuple[int, int],
    scale: tuple[float, float],
    cell: int,
    r: int,
) -> None:
    """Visible landmarks of ``s`` as dots: image point ``(x, y)`` goes to ``origin + (x + 0.5)·scale − 0.5``.

    Points more than ``r`` outside the cell at ``corner`` are not drawn.
    """
    (cx0, cy0), (x0, y0), (sx, sy) = corner, origin, scale
    lm = np.asarray(s.landmarks, dtype=np.float64).reshape(-1, 2)
    vis = np.asarray(s.visible, dtype=bool).reshape(-1)
    for k in range(lm.shape[0]):
        if not vis[k] or not np.isfinite(lm[k]).all():
            continue
        x = x0 + (lm[k, 0] + 0.5) * sx - 0.5
        y = y0 + (lm[k, 1] + 0.5) * sy - 0.5
        if not (cx0 - r <= x <= cx0 + cell + r and cy0 - r <= y <= cy0 + cell + r):
            continue  # far outside its own cell: do not paint on a neighbour
        xi, yi = round(x), round(y)
        draw.ellipse((xi - r - 1, yi - r - 1, xi + r + 1, yi + r + 1), fill=FG)
        draw.ellipse((xi - r, yi - r, xi + r, yi + r), fill=landmark_colour(k))


def _draw_cell(
    sheet: Image.Image,
    draw: ImageDraw.ImageDraw,
    s,
    i: int,
    corner: tuple[int, int],
    cell: int,
    r: int,
    labels: Sequence[str] | None,
    font,
) -> None:
    """Sample ``s`` (number ``i``) scaled into the cell at ``corner``, its landmarks, and its label below
    (``labels[i]``, default the file name of ``s.source``)."""
    img = np.asarray(s.image)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"contact_sheet: sample {i} image must be (H, W, 3) uint8, got {img.dtype} {img.shape}")
    h, w = img.shape[:2]
    sc, ox, oy = cell_geometry(h, w, cell)
    cx0, cy0 = corner
    pil = Image.fromarray(img)
    nw, nh = max(1, int(round(w * sc))), max(1, int(round(h * sc)))
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), Image.BILINEAR if sc > 1 else Image.BOX)
    sheet.paste(pil, (cx0 + ox, cy0 + oy))
    _draw_markers(draw, s, corner, (cx0 + ox, cy0 + oy), (nw / w, nh / h), cell, r)
    label = str(labels[i]) if labels is not None else Path(str(getattr(s, "source", "") or "")).name or f"#{i}"
    draw.text((cx0, cy0 + cell + 1), _shorten(label, font, cell, draw), fill=FG, font=font)


def _draw_legend(
    draw: ImageDraw.ImageDraw, lines: list[list[int]], names: Sequence[str], y: int, r: int, font
) -> None:
    """One coloured dot and ``k:name`` per landmark, ``lines`` as :func:`_legend_layout` laid them out."""
    for line in lines:
        x = PAD
        for k in line:
            draw.ellipse((x, y + 3, x + 2 * r, y + 3 + 2 * r), fill=landmark_colour(k), outline=FG)
            x += 2 * r + 4
            text = f"{k}:{names[k]}"
            draw.text((x, y), text, fill=FG, font=font)
            x += draw.textlength(text, font=font) + 10
        y += LABEL_H


def contact_sheet(
    samples: Sequence,
    path: str | Path,
    cols: int = 8,
    cell: int = 128,
    title: str | None = None,
    legend: bool = True,
    labels: Sequence[str] | None = None,
) -> Path:
    """Write a PNG grid of ``samples`` with their landmarks.

    Args:
        samples: :class:`~equinv.data.sample.Sample` objects, or anything with ``image`` ``(H, W, 3)``
            uint8, ``landmarks`` ``(K, 2)``, ``visible`` ``(K,)`` and ``names`` (``source`` optional).
        path: output PNG.
        cols: cells per row.
        cell: side of each (square) cell in pixels; images are scaled to fit, aspect kept.
        title: optional line above the grid.
        legend: add a key of landmark names and colours under the grid.
        labels: text under each cell (default: the file name of ``sample.source``).

    Returns:
        ``path``.
    """
    path = Path(path)
    n = len(samples)
    if n == 0:
        raise ValueError("contact_sheet: no samples")
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    font = _font()
    r = marker_radius(cell)
    names = _longest_names(samples)

    title_h = LABEL_H + PAD if title else 0
    width = PAD + cols * (cell + PAD)
    grid_h = rows * (cell + LABEL_H + PAD)
    legend_lines = _legend_layout(names, font, r, width) if legend and names else []
    legend_h = len(legend_lines) * LABEL_H + (PAD if legend_lines else 0)
    height = PAD + title_h + grid_h + legend_h

    sheet = Image.new("RGB", (width, height), BG)
    draw = ImageDraw.Draw(sheet)
    if title:
        draw.text((PAD, PAD), _shorten(title, font, width - 2 * PAD, draw), fill=FG, font=font)
    y_top = PAD + title_h
    for i, s in enumerate(samples):
        corner = (PAD + (i % cols) * (cell + PAD), y_top + (i // cols) * (cell + LABEL_H + PAD))
        _draw_cell(sheet, draw, s, i, corner, cell, r, labels, font)
    _draw_legend(draw, legend_lines, names, PAD + title_h + grid_h, r, font)

    return save_image(sheet, path)


def _to_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def batch_to_uint8(images) -> np.ndarray:
    """``(B, C, H, W)`` tensor/array, float in [0, 1] or uint8, C in {1, 3} → ``(B, H, W, 3)`` uint8."""
    a = _to_numpy(images)
    if a.ndim == 3:
        a = a[:, None]
    if a.ndim != 4 or a.shape[1] not in (1, 3):
        raise ValueError(f"draw_batch: images must be (B, 3, H, W) or (B, 1, H, W), got {a.shape}")
    if a.dtype != np.uint8:
        a = np.clip(np.round(a.astype(np.float32) * 255.0), 0, 255).astype(np.uint8)
    if a.shape[1] == 1:
        a = np.repeat(a, 3, axis=1)
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def draw_batch(
    images,
    landmarks,
    visible=None,
    path: str | Path = "batch.png",
    names: Sequence[str] | None = None,
    cols: int = 8,
    cell: int | None = None,
    title: str | None = None,
    labels: Sequence[str] | None = None,
    legend: bool = True,
) -> Path:
    """Contact sheet of a batch, e.g. augmented views.

    Args:
        images: ``(B, 3, H, W)`` torch tensor or array, float in [0, 1] or uint8.
        landmarks: ``(B, K, 2)`` pixel x, y in the batch images.
        visible: ``(B, K)`` bool (default: all visible).
        path: output PNG.
        names: landmark names for the legend (default ``p0, p1, ...``).
        cols, title, labels, legend: as :func:`contact_sheet`.
        cell: cell side (default: the image side, at least 96).
    """
    imgs = batch_to_uint8(images)
    lm = _to_numpy(landmarks).astype(np.float32)
    b = imgs.shape[0]
    if lm.ndim != 3 or lm.shape[0] != b or lm.shape[2] != 2:
        raise ValueError(f"draw_batch: landmarks must be (B, K, 2) with B={b}, got {lm.shape}")
    k = lm.shape[1]
    vis = np.ones((b, k), bool) if visible is None else _to_numpy(visible).astype(bool).reshape(b, k)
    nm = tuple(names) if names is not None else tuple(f"p{j}" for j in range(k))
    items = [_Item(imgs[i], lm[i], vis[i], nm, f"#{i}") for i in range(b)]
    cell = cell or max(96, imgs.shape[1], imgs.shape[2])
    return contact_sheet(items, path, cols=cols, cell=cell, title=title, legend=legend, labels=labels)

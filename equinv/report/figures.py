"""Report figures (matplotlib, Agg): landmark predictions on test images, annotation curves, mask overlays.

Figures are drawn on a bare :class:`matplotlib.figure.Figure` with an Agg canvas rather than through
``pyplot``: no global backend or figure registry is touched, so reports can be written from any process
(a training job, a headless server, a test) without leaking figures.

Coordinates are the equinv convention: 0-based pixel centres, x then y; ``imshow``'s default extent puts
pixel ``(row i, col j)`` centred at ``(x=j, y=i)``, so points land on the pixels they name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter, NullLocator

from equinv.outputs import atomic_path

#: Colours of the two point sets (colour-blind safe pair: blue truth, orange prediction).
TRUE_COLOUR = "#1f77b4"
PRED_COLOUR = "#ff7f0e"
#: Mask overlay colours: both masks, prediction only (false positive), truth only (missed).
MASK_BOTH = (0.17, 0.63, 0.17)
MASK_PRED_ONLY = (0.84, 0.15, 0.16)
MASK_TRUE_ONLY = (0.12, 0.47, 0.71)
GREY = 0.82


def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return Path(path)


def _grid(n: int, cols: int, cell_in: float = 1.9, extra_h: float = 0.6) -> tuple[Figure, list, int, int]:
    cols = max(1, min(cols, n))
    rows = (n + cols - 1) // cols
    fig = _new_figure(cols * cell_in, rows * (cell_in + 0.3) + extra_h)  # + room for each cell's caption
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(rows * cols)]
    for ax in axes:
        ax.set_axis_off()
    return fig, axes, rows, cols


def landmark_grid(path: str | Path, gt: np.ndarray, visible: np.ndarray, pred: np.ndarray,
                  images: np.ndarray | None = None, labels: Sequence[str] | None = None,
                  title: str | None = None, size: int = 96, cols: int = 4) -> Path:
    """Predicted vs true landmarks on a grid of images.

    Args:
        gt, pred: ``(N, K, 2)`` pixel coordinates in the images. visible: ``(N, K)`` bool; only visible
            ground-truth points (and their predictions) are drawn, joined by a thin line.
        images: ``(N, H, W, 3)`` uint8, or ``None`` for a grey ``size``-px background.
        labels: one caption per cell.
    """
    n = len(gt)
    if n == 0:
        raise ValueError("landmark_grid: no images")
    fig, axes, _, _ = _grid(n, cols)
    for i in range(n):
        ax = axes[i]
        if images is not None:
            ax.imshow(images[i], interpolation="bilinear")
            h, w = images[i].shape[:2]
        else:
            h = w = size
            ax.imshow(np.full((h, w), GREY), cmap="gray", vmin=0, vmax=1)
        vis = np.asarray(visible[i], bool)
        g, p = np.asarray(gt[i])[vis], np.asarray(pred[i])[vis]
        for (gx, gy), (px, py) in zip(g, p, strict=True):
            ax.plot([gx, px], [gy, py], color="white", lw=0.6, alpha=0.8)
        ax.scatter(g[:, 0], g[:, 1], s=22, facecolors="none", edgecolors=TRUE_COLOUR, linewidths=1.3)
        ax.scatter(p[:, 0], p[:, 1], s=22, marker="x", color=PRED_COLOUR, linewidths=1.3)
        ax.set_xlim(-0.5, w - 0.5)
        ax.set_ylim(h - 0.5, -0.5)
        if labels is not None:
            ax.set_title(str(labels[i]), fontsize=7, pad=2)
    handles = [Line2D([], [], ls="", marker="o", mfc="none", mec=TRUE_COLOUR, label="true"),
               Line2D([], [], ls="", marker="x", color=PRED_COLOUR, label="predicted")]
    fig.legend(handles=handles, loc="lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95 if title else 1))
    return _save(fig, path)


def mask_overlay(true: np.ndarray, pred: np.ndarray, image: np.ndarray | None = None,
                 alpha: float = 0.5) -> np.ndarray:
    """``(H, W, 3)`` float RGB: ``image`` (or grey) tinted where the masks agree / differ."""
    t, p = np.asarray(true) > 0, np.asarray(pred) > 0
    base = np.full((*t.shape, 3), GREY) if image is None else np.asarray(image, np.float64) / 255.0
    out = base.copy()
    for sel, colour in ((t & p, MASK_BOTH), (p & ~t, MASK_PRED_ONLY), (t & ~p, MASK_TRUE_ONLY)):
        out[sel] = (1 - alpha) * base[sel] + alpha * np.asarray(colour)
    return np.clip(out, 0, 1)


def mask_grid(path: str | Path, true: np.ndarray, pred: np.ndarray, images: np.ndarray | None = None,
              labels: Sequence[str] | None = None, title: str | None = None, cols: int = 4) -> Path:
    """Predicted vs true figure-ground masks (``(N, H, W)``, nonzero = foreground) over the images."""
    n = len(true)
    if n == 0:
        raise ValueError("mask_grid: no masks")
    fig, axes, _, _ = _grid(n, cols)
    for i in range(n):
        img = images[i] if images is not None else None
        axes[i].imshow(mask_overlay(true[i], pred[i], img), interpolation="nearest")
        if labels is not None:
            axes[i].set_title(str(labels[i]), fontsize=7, pad=2)
    handles = [Patch(color=MASK_BOTH, label="both"), Patch(color=MASK_PRED_ONLY, label="predicted only"),
               Patch(color=MASK_TRUE_ONLY, label="true only")]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0.05, 1, 0.95 if title else 1))
    return _save(fig, path)


@dataclass
class Series:
    """One line of a curve: ``y ± err`` at ``x`` (``err`` may be ``None``)."""

    label: str
    x: list[float]
    y: list[float]
    err: list[float | None] | None = None
    reference: bool = False  # a no-feature reference line (dashed, grey, no markers)


def annotation_curve(path: str | Path, series: Sequence[Series], ylabel: str, title: str | None = None,
                     xlabel: str = "number of annotated training images") -> Path:
    """Metric vs number of annotations, log x axis, error bars = std over repeats."""
    fig = _new_figure(5.6, 3.8)
    ax = fig.add_subplot(1, 1, 1)
    ticks: set[float] = set()
    for s in series:
        order = np.argsort(s.x)
        x = np.asarray(s.x, np.float64)[order]
        y = np.asarray(s.y, np.float64)[order]
        err = None
        if s.err is not None:
            err = np.asarray([np.nan if e is None else e for e in s.err], np.float64)[order]
            err = np.where(np.isfinite(err), err, 0.0)
        if s.reference:
            ax.plot(x, y, ls="--", color="0.45", lw=1.2, label=s.label)
        else:
            ax.errorbar(x, y, yerr=err, marker="o", ms=4, capsize=3, lw=1.4, label=s.label)
        ticks.update(float(v) for v in x)
    ax.set_xscale("log")
    # ticks at the measured sizes only, written plainly (1, 5, 10, ...), not as powers of ten
    tick_list = sorted(ticks)
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xticks(tick_list)
    ax.set_xticklabels([f"{t:g}" for t in tick_list], fontsize=8)
    if len(tick_list) == 1:
        ax.set_xlim(tick_list[0] / 2, tick_list[0] * 2)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel(ylabel, fontsize=9)
    ax.grid(True, alpha=0.3)
    if title:
        ax.set_title(title, fontsize=9)
    if len(series) > 1 or (series and series[0].label):
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)

"""Fit a :class:`~equinv.models.transfer_head.TransferHead` to labelled features, choosing it by leave-one-out.

Every labelled example is held out in turn (at most :data:`MAX_HELD_OUT`, evenly spread) and predicted
from the others, with the others' mean shape and spread; the ``(window, temperature)`` pair of
:data:`WINDOWS` × :data:`TEMPERATURES` with the lowest held-out error is kept, and the mean shape instead
when none beats the mean shape's own held-out error. The error is the inter-ocular error when the data
names the eyes, else the mean distance in view half-widths (normalised units). No validation data is
read: the choice uses the training labels only.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from equinv.evaluate.metrics import iod_error
from equinv.features.cache import FeatureSet
from equinv.models.transfer_head import TransferHead, candidates, describe, grid_points, sample_at, vote

WINDOWS = (1.0, 1.5, 2.0, 3.0)
TEMPERATURES = (0.005, 0.01, 0.02)
#: With one example there is nothing to hold out: these are used (docs/landmarks.md).
DEFAULT = (1.5, 0.005)
MAX_HELD_OUT = 64
#: Smallest spread (normalised units, half a 48-grid cell): a landmark that never moved keeps a window.
MIN_SPREAD = 0.02


def _landmark_descriptors(fs: FeatureSet, grid: int, device, batch: int = 32) -> Tensor:
    """``(N, K, C)`` descriptors at the labelled points of every row (one batch of dense maps held at a time)."""
    descs = []
    for s in range(0, len(fs), batch):
        idx = np.arange(s, min(s + batch, len(fs)))
        descs.append(sample_at(describe(fs.batch(idx, device), grid), fs.landmarks[idx].float().to(device)))
    return torch.cat(descs)


def shape_and_spread(points: Tensor, visible: Tensor) -> tuple[Tensor, Tensor]:
    """``(K, 2)`` mean visible position and ``(K,)`` RMS distance from it (at least :data:`MIN_SPREAD`)."""
    w = visible[..., None].float()
    n = w.sum(0).clamp_min(1.0)
    mean = (points * w).sum(0) / n
    var = (((points - mean) ** 2).sum(-1, keepdim=True) * w).sum(0) / n
    return mean, var[..., 0].sqrt().clamp_min(MIN_SPREAD)


def _loo_shapes(points: Tensor, visible: Tensor, rows: np.ndarray) -> tuple[Tensor, Tensor]:
    """Mean shape and spread of all examples but each of ``rows``: ``(n, K, 2)``, ``(n, K)``."""
    out = [shape_and_spread(points[np.arange(len(points)) != i], visible[np.arange(len(points)) != i]) for i in rows]
    return torch.stack([o[0] for o in out]), torch.stack([o[1] for o in out])


def _errors(pred: Tensor, gt: Tensor, visible: Tensor, eyes) -> Tensor:
    """Per-image error: IOD % with ``eyes``, else the mean visible distance (normalised units)."""
    if eyes is not None:
        return iod_error(pred, gt, eyes, visible)
    d = (pred - gt).norm(dim=-1)
    return (d * visible).sum(-1) / visible.sum(-1).clamp_min(1)


def fit_transfer(fs: FeatureSet, channels, grid: int, device="cpu") -> tuple[TransferHead, dict]:
    """The transfer head of the labelled rows of ``fs`` and how it was chosen (held-out errors per setting)."""
    n = len(fs)
    points, visible = fs.landmarks.float().to(device), fs.visible.bool().to(device)
    desc = _landmark_descriptors(fs, grid, device)
    shape, spread = shape_and_spread(points, visible)
    if n < 2:
        head = TransferHead(channels, desc, visible, shape, spread, *DEFAULT)
        return head, {"selection": "defaults (one example)", "window": DEFAULT[0], "temperature": DEFAULT[1]}
    held = np.unique(np.linspace(0, n - 1, min(n, MAX_HELD_OUT)).round().astype(np.int64))
    settings = [(w, t) for w in WINDOWS for t in TEMPERATURES]
    errs = {s: [] for s in settings}
    shape_errs = []
    pts = grid_points(grid, device)
    for s in range(0, len(held), 8):
        rows = held[s : s + 8]
        dense = describe(fs.batch(rows, device), grid).flatten(2)  # (b, C, P)
        sim = torch.einsum("nkc,bcp->bnkp", desc, dense)  # (b, N, K, P)
        centre, rad = _loo_shapes(points, visible, rows)
        valid = visible[None] & torch.from_numpy(np.arange(n)[None, :, None] != rows[:, None, None]).to(device)
        gt, vis = points[rows], visible[rows]
        shape_errs.append(_errors(centre, gt, vis, fs.eyes))
        for w, t in settings:
            pred = vote(candidates(sim, centre, w * rad, t, pts), valid, centre)
            errs[(w, t)].append(_errors(pred, gt, vis, fs.eyes))
    table = {f"window {w}, T {t}": float(torch.cat(e).nanmean()) for (w, t), e in errs.items()}
    best = min(settings, key=lambda st: float(torch.cat(errs[st]).nanmean()))
    best_err, shape_err = float(torch.cat(errs[best]).nanmean()), float(torch.cat(shape_errs).nanmean())
    head = TransferHead(channels, desc, visible, shape, spread, *best, shape_only=not best_err < shape_err)
    info = {"selection": "leave-one-out", "held_out": len(held), "window": best[0], "temperature": best[1],
            "held_out_error": best_err, "held_out_mean_shape_error": shape_err, "shape_only": not best_err < shape_err,
            "error": "iod_error_percent" if fs.eyes is not None else "mean distance (normalised)", "table": table}
    return head, info

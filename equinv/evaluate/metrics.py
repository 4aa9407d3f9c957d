"""Landmark-regression metrics: inter-ocular error (protocol §5b) and PCK (§5c), correct and as the reference.

Frames. All functions take ``(B, K, 2)`` (x, y) points of predictions and ground truth in one common frame:

* :func:`iod_error` and :func:`per_landmark_errors` are scale-free ratios, so any frame works (the
  reference uses normalised ``[-1, 1]`` coordinates; the images are square, so this equals pixels);
* :func:`pck` takes points in the pixels of an image of side ``size`` (96 for the final view) and uses the
  threshold ``alpha · size`` (the longer side when ``size = (H, W)``);
* :func:`paper_pck` takes normalised ``[-1, 1]`` points (``kp_n = 2·kp/(W−1) − 1``) and reproduces the
  reference metric exactly, quirks included (§8.10).

``visible`` is a ``(B, K)`` bool mask; invisible points never count (except as noted for ``paper_pck``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from equinv import coords as C


def _as_float(x) -> Tensor:
    t = torch.as_tensor(x)
    return t.double() if t.dtype == torch.float64 else t.float()


def _visible(visible, like: Tensor) -> Tensor:
    if visible is None:
        return torch.ones(like.shape[:2], dtype=torch.bool, device=like.device)
    return torch.as_tensor(visible, device=like.device).bool()


def interocular(gt, eyes: Sequence[int]) -> Tensor:
    """``(B,)`` distance between the two ground-truth eye points ``eyes = (e1, e2)``, in the input frame."""
    gt = _as_float(gt)
    e1, e2 = int(eyes[0]), int(eyes[1])
    return torch.linalg.vector_norm(gt[:, e1] - gt[:, e2], dim=-1)


def per_landmark_errors(pred, gt, eyes: Sequence[int] | None = None, visible=None) -> Tensor:
    """``(B, K)`` point errors ``‖p_i − g_i‖``; invisible points are NaN.

    With ``eyes`` the errors are in percent of the inter-ocular distance (``100·‖p−g‖/‖g_e1−g_e2‖``),
    otherwise in the units of the input frame.
    """
    pred, gt = _as_float(pred), _as_float(gt)
    vis = _visible(visible, gt)
    d = torch.linalg.vector_norm(pred - gt, dim=-1)
    if eyes is not None:
        d = 100.0 * d / interocular(gt, eyes)[:, None]
    return torch.where(vis, d, torch.full_like(d, math.nan))


def iod_error(pred, gt, eyes: Sequence[int], visible=None) -> Tensor:
    """``(B,)`` inter-ocular-normalised error in percent (protocol §5b).

    ``100 · mean_i ‖p_i − g_i‖ / ‖g_e1 − g_e2‖`` with the mean over the (visible) landmarks of each image.
    ``pred``, ``gt``: ``(B, K, 2)`` in any common frame (normalised or pixel: the ratio is the same for square
    images). The dataset-level number is the mean of this vector (the reference's batch-size-weighted
    average of batch means is the same thing).
    """
    e = per_landmark_errors(pred, gt, eyes, visible)
    return torch.nanmean(e, dim=1)


def pck(pred, gt, visible=None, size: int | Sequence[int] = 96, alpha: float = 0.05) -> dict:
    """Percentage of correct keypoints, computed correctly.

    Args:
        pred, gt: ``(B, K, 2)`` in the pixels of an image of side ``size``.
        visible: ``(B, K)`` bool; invisible points are excluded from numerator and denominator.
        size: image side, or ``(H, W)``: the threshold is ``alpha ×`` the longer side.
        alpha: threshold fraction (0.05).

    Returns:
        ``{"pck": pooled percent over all visible points, "mean_over_landmarks": mean of the per-landmark
        percentages (landmarks with visible points), "per_landmark": K percentages (NaN when a landmark is
        never visible), "threshold_px": float, "n_points": int}``.
    """
    pred, gt = _as_float(pred), _as_float(gt)
    vis = _visible(visible, gt)
    side = max(size) if isinstance(size, (tuple, list)) else size
    thr = alpha * float(side)
    d = torch.linalg.vector_norm(pred - gt, dim=-1)
    ok = (d <= thr) & vis
    count = vis.sum(0).double()
    per = 100.0 * ok.sum(0).double() / count  # NaN where never visible
    n = int(vis.sum())
    return {
        "pck": 100.0 * float(ok.sum()) / n if n else math.nan,
        "mean_over_landmarks": float(torch.nanmean(per)) if n else math.nan,
        "per_landmark": per.tolist(),
        "threshold_px": thr,
        "n_points": n,
    }


def paper_pck(pred, gt, visible=None, batch_size: int = 32, alpha: float = 0.05, frame: int = 48) -> dict:
    """PCK exactly as the reference computes it (CL/models/metric.py; protocol §5c and §8.10).

    Args:
        pred, gt: ``(B, K, 2)`` normalised ``[-1, 1]`` coordinates, in the order of the evaluation loader.
        visible: ``(B, K)`` bool.
        batch_size: the evaluation batch size; the quirky per-batch averaging depends on it.
        alpha: threshold fraction (0.05).
        frame: the pixel frame points are mapped into, ``(x + 1)·(frame − 1)/2`` (48).

    Quirks reproduced:

    1. invisible gt is set to (0, 0) in the 48-px frame, and any gt with ``x ≤ 0`` or ``y ≤ 0`` is excluded,
       so a *visible* point on the top or left border is excluded too;
    2. distances are truncated to int32 before the test ``d < alpha·frame``; with 48 px this accepts true
       distances < 3 px (6.25 %), not < 2.4 px;
    3. accuracy is computed per part within a batch, averaged over parts with counted points, and the batch
       values are averaged with batch-size weights (batches without any counted point contribute 0).

    Returns:
        ``{"pck": percent, "per_landmark": K pooled per-part percentages over all batches (for reference;
        not part of the quirky mean), "batch_size": int, "threshold_px": float}``.
    """
    pred, gt = _as_float(pred), _as_float(gt)
    vis = _visible(visible, gt)
    p = C.points_from_norm(pred, frame, align_corners=True)
    g = C.points_from_norm(gt, frame, align_corners=True)
    g = torch.where(vis[..., None], g, torch.zeros_like(g))
    counted = (g[..., 0] > 0) & (g[..., 1] > 0)
    d = torch.linalg.vector_norm(p - g, dim=-1).to(torch.int32)
    thr = alpha * frame
    ok = (d < thr) & counted
    total, weight = 0.0, 0
    b = pred.shape[0]
    for s in range(0, b, batch_size):
        c, o = counted[s : s + batch_size], ok[s : s + batch_size]
        n_k = c.sum(0)
        has = n_k > 0
        acc = (o.sum(0)[has].double() / n_k[has].double()).mean().item() if bool(has.any()) else 0.0
        total += acc * c.shape[0]
        weight += c.shape[0]
    n_k = counted.sum(0).double()
    per = 100.0 * ok.sum(0).double() / n_k
    return {
        "pck": 100.0 * total / weight if weight else math.nan,
        "per_landmark": per.tolist(),
        "batch_size": batch_size,
        "threshold_px": thr,
    }


def evaluate_predictions(pred: Tensor, labels, *, image_size: int = 96, alpha: float = 0.05, paper: bool = False,
                         eval_batch_size: int = 32) -> dict:
    """All metrics of normalised ``(N, K, 2)`` predictions against ``labels`` (``landmarks``, ``visible``, ``eyes``:
    a :class:`~equinv.features.cache.FeatureSet`).

    IOD error (when the data has eye indices) in normalised coordinates; correct PCK in the
    ``image_size``-px final view; the reference PCK with ``paper``.
    """
    gt, vis = labels.landmarks, labels.visible
    res: dict = {"n_images": len(gt)}
    if labels.eyes is not None:
        res["iod_error_percent"] = float(iod_error(pred, gt, labels.eyes, vis).mean())
        res["per_landmark"] = torch.nanmean(per_landmark_errors(pred, gt, labels.eyes, vis), 0).tolist()
    else:
        res["iod_error_percent"] = None
    pred_px, gt_px = (C.points_from_norm(t, image_size, align_corners=True) for t in (pred, gt))
    p = pck(pred_px, gt_px, vis, image_size, alpha)
    res["pck"] = p["pck"]
    res["pck_per_landmark"] = p["per_landmark"]
    if labels.eyes is None:
        res["per_landmark"] = p["per_landmark"]
    if paper:
        pp = paper_pck(pred, gt, vis, eval_batch_size, alpha)
        res["paper_pck"] = pp["pck"]
        res["paper_pck_per_landmark"] = pp["per_landmark"]
    return res


def score(res: dict) -> float:
    """Lower is better: the IOD error, or −PCK without eye indices (the validation score of a regressor)."""
    return res["iod_error_percent"] if res["iod_error_percent"] is not None else -res["pck"]

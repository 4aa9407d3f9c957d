"""Landmark transfer by nearest neighbour in descriptor space (paper Fig. 2; protocol.md §5a).

Given a reference image's descriptors and its landmarks, each landmark of each target is the target pixel
whose descriptor has the highest cosine similarity with the reference descriptor at the landmark (hard
nearest neighbour, the reference's matching rule). Optionally the argmax is refined by a soft-argmax over
a ``(2r+1)²`` window around it (similarity / ``temperature``, softmax, expected position), which gives
sub-pixel positions.

Frames: landmarks are pixel coordinates (0-based pixel centres, x then y) of the *image* frame of side
``image_size`` (default: the descriptor grid side S). When S differs from the image side, a point maps
to the grid as ``g = (p + 0.5)·S/W − 0.5`` and back the same way (:func:`equinv.coords.resize_points`). The
reference descriptor is read at the grid cell nearest to the landmark (rounding, as the reference code).
"""

from __future__ import annotations

import torch
from torch import Tensor

from equinv import coords as C


def reference_vectors(ref_desc: Tensor, ref_landmarks: Tensor, image_size: float | None = None) -> Tensor:
    """Descriptors ``(K, D)`` of ``ref_desc`` ``(D, S, S)`` at the grid cells nearest to ``ref_landmarks``."""
    if ref_desc.dim() == 4:
        ref_desc = ref_desc[0]
    d, h, w = ref_desc.shape
    size = float(image_size or w)
    g = C.resize_points(ref_landmarks.to(ref_desc.device, torch.float32), size, w)
    ix, iy = C.nearest_pixel(g, (h, w))
    return ref_desc[:, iy, ix].T.contiguous()


@torch.no_grad()
def transfer_landmarks(ref_desc: Tensor, ref_landmarks: Tensor, target_desc: Tensor, *,
                       image_size: float | None = None, soft: bool = False, radius: int = 2,
                       temperature: float = 0.02, chunk: int = 16, return_scores: bool = False):
    """Predict every target's landmarks from one reference.

    Args:
        ref_desc: ``(D, S, S)`` or ``(1, D, S, S)`` reference descriptors (unit norm per pixel for cosine).
        ref_landmarks: ``(K, 2)`` reference landmarks, pixels of the image frame.
        target_desc: ``(N, D, S, S)`` target descriptors, same grid as the reference.
        image_size: side of the image frame of the landmarks (default S).
        soft: refine the hard argmax by a soft-argmax in a ``(2·radius+1)²`` window around it.
        radius, temperature: the window and the softmax temperature of the refinement.
        chunk: targets per similarity block (bounds memory at ``chunk·K·S²`` floats).
        return_scores: also return the best similarity ``(N, K)`` (a sum of per-layer cosines for
            layer-wise normalised hypercolumns).

    Returns:
        ``(N, K, 2)`` predicted landmarks in pixels of the target image frame (and the scores).
    """
    if target_desc.dim() != 4:
        raise ValueError(f"target descriptors must be (N, D, S, S), got {tuple(target_desc.shape)}")
    n, d, h, w = target_desc.shape
    size = float(image_size or w)
    q = reference_vectors(ref_desc, ref_landmarks, size).to(target_desc.dtype)  # (K, D)
    if q.shape[1] != d:
        raise ValueError(f"reference has {q.shape[1]}-d descriptors, targets {d}-d")
    k = q.shape[0]
    ys, xs = torch.meshgrid(torch.arange(h, device=target_desc.device, dtype=torch.float32),
                            torch.arange(w, device=target_desc.device, dtype=torch.float32), indexing="ij")
    xs, ys = xs.reshape(-1), ys.reshape(-1)
    preds, scores = [], []
    for i in range(0, n, chunk):
        t = target_desc[i : i + chunk].flatten(2)  # (n, D, HW)
        sim = torch.einsum("kd,ndp->nkp", q, t).float()  # (n, K, HW)
        best, j = sim.max(-1)
        px, py = xs[j], ys[j]
        if soft:
            inside = ((xs.view(1, 1, -1) - px[..., None]).abs() <= radius) & (
                (ys.view(1, 1, -1) - py[..., None]).abs() <= radius)
            wgt = torch.softmax((sim - best[..., None]).div(temperature).masked_fill(~inside, float("-inf")), -1)
            px = (wgt * xs).sum(-1)
            py = (wgt * ys).sum(-1)
        preds.append(torch.stack((px, py), -1))
        scores.append(best)
    pred = C.resize_points(torch.cat(preds).reshape(n, k, 2), w, size)
    if return_scores:
        return pred, torch.cat(scores)
    return pred

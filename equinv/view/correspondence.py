"""Data of the correspondence and parts views: one reference image, its targets, their descriptors.

Frame: every point is in pixels of the evaluated ``size × size`` view (0-based pixel centres, x right,
y down), the frame of ``equinv match``'s ``landmarks_96``; descriptors sit on a ``grid × grid`` lattice
over that view (``g = (p + 0.5)·grid/size − 0.5``, :mod:`equinv.evaluate.transfer`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from equinv.errors import InputError
from equinv.view import codec
from equinv.view.descriptors import Features, compute, describe_source, part_maps


@dataclass
class Correspondence:
    """What the page needs: ``meta`` (JSON), ``images`` (``(size, size, 3)`` uint8 views, reference first),
    ``descriptors`` (source → stored int16 ``(B, S, S, d)``) and ``parts`` (labels, strength) or None."""

    meta: dict
    images: list[np.ndarray]
    descriptors: dict[str, torch.Tensor] = field(default_factory=dict)
    parts: tuple[np.ndarray, np.ndarray] | None = None


def _r(a) -> list:
    return np.round(np.asarray(a, np.float64), 3).tolist()


def agreement(full: torch.Tensor, stored: torch.Tensor, points: torch.Tensor, size: int) -> list[int]:
    """``[same, total]``: transfers of ``points`` from image 0 to every other image that land on the same
    grid cell with the stored descriptors as with the full-precision ones."""
    from equinv.evaluate.transfer import transfer_landmarks

    if not len(points) or full.shape[0] < 2:
        return [0, 0]
    a = transfer_landmarks(full[0], points, full[1:], image_size=size)
    b = transfer_landmarks(stored[0], points, stored[1:], image_size=size)
    same = (a == b).all(-1)
    return [int(same.sum()), int(same.numel())]


def build(rds, ref_i: int, tds, feats: Features, *, limit: int = 24, max_dim: int = 64, device="cpu",
          specs: tuple[str, str] = ("", "")) -> Correspondence:
    """Describe image ``ref_i`` of ``rds`` and the first ``limit`` images of ``tds`` (prepared
    :class:`~equinv.data.dataset.LandmarkDataset` s) with every source of ``feats`` and (with ``feats.parts``)
    their NMF part maps. ``specs``: the two datasets' specs, for the page's statement."""
    if limit < 1:
        raise InputError(f"--limit must be at least 1, got {limit}")
    if not 1 <= max_dim <= 4096:
        raise InputError(f"--max-dim must be in 1..4096, got {max_dim}")
    ref_spec, targets = specs
    if not 0 <= ref_i < len(rds):
        raise InputError(f"reference index {ref_i} out of range: {ref_spec} has {len(rds)} images (0..{len(rds) - 1})")
    n = min(len(tds), limit)
    rb, tb = rds.__getitems__([ref_i]), tds.__getitems__(list(range(n)))
    groups = [(rb["image"], rds.pre, rds.index.kind), (tb["image"], tds.pre, tds.index.kind)]
    m, tm, s = rds.pre.margin, tds.pre.margin, rds.pre.size

    views = torch.cat([rb["image"][:, :, m : m + s, m : m + s], tb["image"][:, :, tm : tm + s, tm : tm + s]])
    names = list(rds.names)
    labelled = tuple(tds.names) == tuple(rds.names) and bool(tb["visible"].any())
    ref_lm = rb["landmarks"][0].numpy().astype(np.float64) - m
    ref_vis = rb["visible"][0].numpy().astype(bool)
    images = [{"file": f"img/{i:04d}.png", "role": "reference" if i == 0 else "target",
               "path": str(ds.index.records[int(b["index"][j])].path), "index": ref_i if i == 0 else j}
              for i, (ds, b, j) in enumerate([(rds, rb, 0)] + [(tds, tb, j) for j in range(n)])]
    images[0].update(landmarks=_r(ref_lm), visible=ref_vis.tolist())
    if labelled:
        for j in range(n):
            images[1 + j].update(landmarks=_r(tb["landmarks"][j].numpy() - tm), visible=tb["visible"][j].tolist())

    out = Correspondence(meta={}, images=list(views.permute(0, 2, 3, 1).numpy()))
    # the agreement check uses the exported (rounded) reference points, as the page does
    points = torch.tensor(_r(ref_lm[ref_vis]), dtype=torch.float32).reshape(-1, 2)
    sources = []
    for src in feats.sources:
        full = compute(groups, feats, src, device)
        reduced, info = codec.reduce(full, max_dim)
        q = codec.quantise(reduced)
        out.descriptors[src] = q
        sources.append({"name": src, "what": describe_source(feats, src), **info, "shape": list(q.shape),
                        "scale": codec.SCALE, "file": f"data/desc_{src}.js",
                        "agreement": agreement(full, codec.dequantise(q), points, s)})
    parts_meta = None
    if feats.parts:
        lab, strength, dim = part_maps(groups, feats, device)
        out.parts = (lab.numpy().astype(np.uint8), (strength.numpy() * 255).round().astype(np.uint8))
        parts_meta = {"dim": dim, "grid": feats.grid, "file": "data/parts.js", "model": str(feats.parts)}
    out.meta = {
        "image_size": s, "grid": feats.grid, "names": names, "labelled": labelled,
        "reference": {"spec": ref_spec, "index": ref_i, "path": images[0]["path"]},
        "targets": {"spec": targets, "total": len(tds), "shown": n},
        "images": images, "sources": sources, "parts": parts_meta,
    }
    return out


def stored_descriptors(out, source: str) -> torch.Tensor:
    """The descriptors a written page holds for ``source``, as ``(B, d, S, S)`` float32 (reference first):
    exactly what the page matches with."""
    from equinv.view.page import read_data

    meta = read_data(out, "meta")["correspondence"]
    info = next((s for s in meta["sources"] if s["name"] == source), None)
    if info is None:
        raise InputError(f"the page has no {source!r} descriptors", out)
    return codec.dequantise(codec.decode(read_data(out, f"desc_{source}"), tuple(info["shape"])))

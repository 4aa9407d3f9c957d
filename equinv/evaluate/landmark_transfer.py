"""``equinv match``: transfer a reference image's landmarks to target images by nearest neighbour.

The reference's landmarks (or points given in its own image's pixels) are matched on every target by
:func:`~equinv.evaluate.transfer.transfer_landmarks` over unit-norm descriptors
(:func:`~equinv.features.descriptors.describe`) of any feature source at the image side (96). The result lists,
per target, the predicted points in the 96-px evaluated view and in the target's own input-image pixels
(x right, y down, pixel centres at integers), and their errors when the targets carry the reference's landmarks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equinv import coords as C
from equinv.data.dataset import open_dataset
from equinv.data.spec import split_index
from equinv.errors import InputError
from equinv.evaluate.protocol import pick_device
from equinv.evaluate.transfer import transfer_landmarks
from equinv.features.descriptors import describe
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import stats_for_kind
from equinv.records import write_json


@dataclass
class TransferConfig:
    """What ``equinv match`` does: see the command's ``--help``."""

    reference: str
    targets: str
    features: FeatureSpec = FeatureSpec()
    points: str | None = None
    max_targets: int | None = 32
    image_size: int = 96
    whole_norm: bool = False
    soft: bool = False
    batch: int = 32
    n_figure: int = 15
    cell: int = 128
    cols: int = 4
    device: str | None = None
    progress: bool = False


def parse_points(text: str) -> np.ndarray:
    """``"x,y;x,y;..."`` → ``(K, 2)`` finite points."""
    try:
        arr = np.asarray([[float(v) for v in item.split(",")] for item in text.replace(" ", "").split(";") if item],
                         np.float64)
    except ValueError:
        arr = np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 2 or not len(arr) or not np.isfinite(arr).all():
        raise InputError(f"--points must look like 'x,y;x,y;...' with finite numbers, got {text!r}")
    return arr


def _r(a) -> list:
    return np.round(np.asarray(a, np.float64), 3).tolist()


def _reference(cfg: TransferConfig):
    """The reference dataset, its batch and record index, its landmarks in the view frame, visibility, names."""
    ref_spec, ref_i = split_index(cfg.reference)
    rds = open_dataset(ref_spec, cfg.image_size, progress=cfg.progress)
    if not 0 <= ref_i < len(rds):
        raise InputError(f"reference index {ref_i} out of range: {ref_spec} has {len(rds)} images")
    rb = rds.__getitems__([ref_i])
    rj, m = int(rb["index"][0]), rds.pre.margin
    if cfg.points:
        pts = parse_points(cfg.points)
        ref_lm = C.canvas_to_view(C.source_to_canvas(pts, rds.boxes[rj], rds.pre.canvas), m)
        outside = (ref_lm < -0.5).any(1) | (ref_lm > rds.pre.size - 0.5).any(1)
        if outside.any():
            k = int(np.flatnonzero(outside)[0])
            raise InputError(f"--points: point {k} ({pts[k, 0]:g}, {pts[k, 1]:g}) lies outside the reference "
                             f"image's evaluated view (image {ref_i} of {ref_spec})")
        return rds, rb, rj, ref_lm, np.ones(len(ref_lm), bool), [f"p{k}" for k in range(len(ref_lm))]
    ref_vis = rb["visible"][0].numpy().astype(bool)
    if not ref_vis.any():
        raise InputError(f"reference image {ref_i} of {ref_spec} has no landmarks; give --points x,y;x,y")
    return rds, rb, rj, C.canvas_to_view(rb["landmarks"][0].numpy().astype(np.float64), m), ref_vis, list(rds.names)


def _target_entries(tds, tb, pred, score, ref_vis, labelled: bool, s: int):
    """One JSON entry per target (points in both frames, errors when labelled) and the error arrays."""
    targets, errs, errs70, tm = [], [], [], tds.pre.margin
    for i in range(len(pred)):
        j = int(tb["index"][i])
        entry = {"index": i, "path": str(tds.index.records[j].path), "landmarks_96": _r(pred[i]),
                 "landmarks_image": _r(C.canvas_to_source(C.view_to_canvas(pred[i], tm), tds.boxes[j], tds.pre.canvas)),
                 "score": _r(score[i])}
        if labelled:
            true = C.canvas_to_view(tb["landmarks"][i].numpy().astype(np.float64), tm)
            ok = tb["visible"][i].numpy().astype(bool) & ref_vis
            d = np.linalg.norm(pred[i] - true, axis=-1)
            entry["true_96"] = _r(true)
            entry["error_96"] = [round(float(v), 3) if o else None for v, o in zip(d, ok, strict=True)]
            entry["mean_error_96"] = round(float(d[ok].mean()), 4) if ok.any() else None
            errs.append(d[ok])
            errs70.append(d[ok] * (C.DVE_SIDE - 1.0) / (s - 1))  # the 70-px frame's scale (C.to_dve70)
        targets.append(entry)
    return targets, errs, errs70


def _figure(cfg, out: Path, rds, rb, tds, tb, ref_lm, ref_vis, pred, targets, labelled: bool) -> None:
    from equinv.viz.maps import match_figure

    m, s, tm = rds.pre.margin, rds.pre.size, tds.pre.margin
    nf = min(len(pred), cfg.n_figure)
    truth = tb["landmarks"][:nf].numpy() - tm if labelled else None
    tvis = tb["visible"][:nf].numpy() if labelled else None
    cap = [f"#{i} {t['mean_error_96']:.1f}px" if t.get("mean_error_96") is not None else f"#{i}"
           for i, t in enumerate(targets[:nf])]
    match_figure(rb["image"][0][:, m : m + s, m : m + s], ref_lm, tb["image"][:nf, :, tm : tm + s, tm : tm + s],
                 pred[:nf], out / "matches.png", truth=truth, truth_visible=tvis, ref_visible=ref_vis,
                 cell=cfg.cell, cols=cfg.cols, labels=cap)


def run_transfer(cfg: TransferConfig, out: str | Path) -> dict:
    """Transfer the reference's landmarks to the targets; writes ``out/matches.json`` and ``out/matches.png``."""
    out, dev = Path(out), pick_device(cfg.device)
    rds, rb, rj, ref_lm, ref_vis, names = _reference(cfg)
    tds = open_dataset(cfg.targets, cfg.image_size, progress=cfg.progress)
    n_t = len(tds) if cfg.max_targets is None else min(len(tds), cfg.max_targets)
    tb = tds.__getitems__(list(range(n_t)))
    s = rds.pre.size
    source = build_source(cfg.features.with_defaults(grid=s, readout="output"), dev)
    spec = source.spec
    stats = spec.stats or source.stats or stats_for_kind(tds.index.kind)
    kw = dict(layerwise=not cfg.whole_norm, stats=stats, device=dev)
    rdesc = describe(rb["image"], source, spec.grid, pre=rds.pre, **kw)
    tdesc = describe(tb["image"], source, spec.grid, pre=tds.pre, batch=cfg.batch, **kw)
    pred, score = transfer_landmarks(rdesc[0], torch.from_numpy(ref_lm).float(), tdesc, image_size=s,
                                     soft=cfg.soft, return_scores=True)
    pred, score = pred.cpu().numpy().astype(np.float64), score.cpu().numpy()
    labelled = not cfg.points and tuple(tds.names) == tuple(rds.names) and bool(tb["visible"].any())
    targets, errs, errs70 = _target_entries(tds, tb, pred, score, ref_vis, labelled, s)
    m = rds.pre.margin
    result = {
        "backbone": spec.backbone, "arch": spec.arch, "features": spec.as_dict(),
        "descriptor": {"kind": spec.source, "size": spec.grid, "layerwise": not cfg.whole_norm, "stats": stats,
                       "layer": spec.layers, "soft": bool(cfg.soft)},
        "names": names,
        "frame": f"landmarks_96: pixels of the {s}x{s} evaluated view; landmarks_image: pixels of each input image",
        "reference": {"spec": split_index(cfg.reference)[0], "index": split_index(cfg.reference)[1],
                      "path": str(rds.index.records[rj].path), "landmarks_96": _r(ref_lm),
                      "landmarks_image": _r(C.canvas_to_source(C.view_to_canvas(ref_lm, m), rds.boxes[rj],
                                                               rds.pre.canvas)),
                      "visible": ref_vis.tolist()},
        "targets_spec": cfg.targets, "targets": targets,
    }
    if labelled and errs:
        allv, all70 = np.concatenate(errs), np.concatenate(errs70)
        result["summary"] = {"n_targets": n_t, "n_points": int(allv.size),
                             "mean_error_96": float(allv.mean()) if allv.size else None,
                             "mean_error_dve70": float(all70.mean()) if all70.size else None}
    write_json(out / "matches.json", result, indent=1)
    _figure(cfg, out, rds, rb, tds, tb, ref_lm, ref_vis, pred, targets, labelled)
    return result

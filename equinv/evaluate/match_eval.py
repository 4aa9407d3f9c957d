"""``equinv eval match``: the protocol's matching benchmark (§5a) for any descriptor, as a JSON record."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from equinv.augment.photometric import FACE_MEAN, FACE_STD, IMAGENET_MEAN, IMAGENET_STD
from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.evaluate.descriptors import layerwise_normalize, load_projector, raw_hypercolumn, stats_for_kind
from equinv.evaluate.matching import hypercolumn_descriptors, match_errors, projector_descriptors
from equinv.evaluate.sources import build_source, is_dve
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps
from equinv.report.record import run_record


def nmf_descriptors(hypercolumn, parts, size: int = 96):
    """NMF coefficients of the (per-layer normalised) hypercolumn, L2-normalised per pixel."""

    def fn(x):
        h = raw_hypercolumn(hypercolumn, x, size)
        if parts.layerwise:
            h = layerwise_normalize(h, hypercolumn.channels)
        return F.normalize(parts.transform_maps(h), dim=1)

    return fn


def dve_descriptors(source, size: int = 96):
    """A DVE network's descriptors, bilinear to ``size``² and L2-normalised (cosine matching, as ours).

    DVE's own matching uses a 48² grid and raw dot products (protocol §9); equinv compares every
    descriptor on the same 96² cosine protocol.
    """

    def fn(x):
        d = source.maps(x)[0]
        return F.normalize(F.interpolate(d, size=(size, size), mode="bilinear", align_corners=False), dim=1)

    return fn


def eval_match(
    data: str,
    backbone: str | None = None,
    arch: str = "resnet18",
    layer: int = 4,
    descriptor: str = "hypercolumn",
    projector: str | None = None,
    parts: str | None = None,
    pairs: int = 500,
    seed: int = 1,
    batch: int = 16,
    device: str | None = None,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Same- and different-identity matching errors of ``descriptor`` on labelled ``data``.

    ``backbone``: a run dir, weights file, or ``None``/``"random"``; a DVE run or weights file selects
    ``descriptor="dve"`` (the network's output map, bilinear to 96² and L2-normalised). Returns (and writes to
    ``out/match.json``) the errors under the keys ``match_error_same`` / ``match_error_diff`` (70-px
    frame) and ``*_px`` (96-px input frame), with the exact configuration and software versions.
    """
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = None if backbone in (None, "random") else backbone
    if descriptor == "dve" or is_dve(weights):
        descriptor = "dve"
        source = build_source("dve", backbone=weights, device=dev)
        arch = source.arch
        fn = dve_descriptors(source)
    else:
        hc = Hypercolumn(frozen_trunk(arch, weights), reference_taps(layer), size=96).to(dev)
        if descriptor == "hypercolumn":
            fn = hypercolumn_descriptors(hc)
        elif descriptor == "projected":
            if projector is None:
                raise ValueError("--descriptor projected needs --projector RUN_OR_FILE")
            fn = projector_descriptors(hc, load_projector(projector, dev))
        elif descriptor == "nmf":
            if parts is None:
                raise ValueError("--descriptor nmf needs --parts FILE (from equinv parts --method nmf)")
            from equinv.evaluate.parts import PartsModel

            fn = nmf_descriptors(hc, PartsModel.load(parts).to(dev))
        else:
            raise ValueError(f"unknown descriptor {descriptor!r}")
    kind = parse_spec(data).kind
    stats = "face" if descriptor == "dve" else stats_for_kind(kind)  # DVE nets are trained on face statistics
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if stats == "imagenet" else (FACE_MEAN, FACE_STD)
    ds = LandmarkDataset(read_index(data), Preprocess(size=96))
    ds.prepare(progress=progress)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = match_errors(fn, ds, n_pairs=pairs, seed=seed, batch=batch, device=dev, mean=mean, std=std,
                           progress=progress)
    config = {
        "data": data, "backbone": backbone or "random", "arch": arch, "layer": layer, "descriptor": descriptor,
        "projector": projector, "parts": parts, "pairs": pairs, "seed": seed, "frame": "70-px DVE frame",
        "grid": 96, "similarity": "cosine, hard nearest neighbour",
    }
    record = {**res, "seconds": round(time.perf_counter() - t0, 2), **run_record(config, [data], seed)}
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "match.json").write_text(json.dumps(record, indent=2))
    return record

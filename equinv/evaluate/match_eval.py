"""``equinv eval match``: the protocol's matching benchmark (§5a) for any feature source, as a JSON record.

Descriptors (:mod:`equinv.features.descriptors`): every source read at 96², each map L2-normalised per pixel
(per layer for the hypercolumn, the reference's matching descriptor; a projector's output, NMF coefficients or
a DVE network's map as a whole). DVE's own matching uses a 48² grid and raw dot products (protocol §9); equinv
compares every descriptor on the same 96² cosine protocol.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.evaluate.matching import match_errors
from equinv.evaluate.protocol import pick_device
from equinv.features.descriptors import descriptor_fn
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import input_stats, stats_for_kind
from equinv.records import run_record, write_json

#: The descriptor grid of the matching protocol.
GRID = 96


def eval_match(data: str, features: FeatureSpec | None = None, *, pairs: int = 500, seed: int = 1,
               batch: int = 16, device: str | None = None, out: str | Path | None = None,
               progress: bool = True) -> dict:
    """Same- and different-identity matching errors of the ``features`` descriptors on labelled ``data``.

    A backbone that is a DVE run selects the DVE source. Returns (and writes to ``out/match.json``) the
    errors under the keys ``match_error_same`` / ``match_error_diff`` (70-px frame) and ``*_px`` (96-px input
    frame), with the exact configuration and software versions.
    """
    dev = pick_device(device)
    features = features or FeatureSpec()
    source = build_source(features.with_defaults(grid=GRID, readout="output"), dev)
    spec = source.spec
    stats = spec.stats or source.stats or stats_for_kind(parse_spec(data).kind)
    mean, std = input_stats(stats)
    ds = LandmarkDataset(read_index(data), Preprocess(size=96))
    ds.prepare(progress=progress)
    t0 = time.perf_counter()
    with torch.no_grad():
        res = match_errors(descriptor_fn(source, GRID), ds, n_pairs=pairs, seed=seed, batch=batch, device=dev,
                           mean=mean, std=std, progress=progress)
    config = {
        "data": data, "features": spec.as_dict(), "backbone": spec.backbone,
        "arch": getattr(source, "arch", spec.arch), "layer": spec.layers, "descriptor": spec.source,
        "pairs": pairs, "seed": seed, "frame": "70-px DVE frame", "grid": GRID,
        "similarity": "cosine, hard nearest neighbour",
    }
    record = {**res, "seconds": round(time.perf_counter() - t0, 2), **run_record(config, [data], seed)}
    if out is not None:
        write_json(Path(out) / "match.json", record)
    return record

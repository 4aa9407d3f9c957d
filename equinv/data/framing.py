"""Measure how tightly each crop rule frames faces, to pick the generic crop margins.

The CelebA protocol crop (178 × 178 at top 30 → 136 → 96) puts the eyes about a fifth of the canvas
apart. MTFL lfw/net photos have no such crop: they are framed by the face box (``box`` rule) or by
the 5-landmark box (``landmarks`` rule). This tool measures the median inter-ocular distance as a
fraction of the canvas side for each and prints the box / landmark scales that make MTFL crops frame
faces as CelebA's do (the defaults in :mod:`equinv.data.preprocess`)::

    python -m equinv.data.framing --celeba celeba:../shared/data/celeba --mtfl mtfl:../shared/data/mtfl
"""

from __future__ import annotations

import argparse

import numpy as np

from equinv.data.preprocess import Preprocess, canvas_box
from equinv.data.sample import LandmarkIndex
from equinv.data.spec import read_index


def iod_fraction(index: LandmarkIndex, pre: Preprocess) -> np.ndarray:
    """Inter-ocular distance / canvas side, per record (eyes from ``index.eyes``)."""
    if index.eyes is None:
        raise ValueError(f"{index.kind} has no eye landmarks")
    a, b = index.eyes
    out = []
    for r in index.records:
        x0, _, x1, _ = canvas_box(r, r.meta["size"], pre)
        out.append(np.linalg.norm(r.landmarks[a] - r.landmarks[b]) / (x1 - x0))
    return np.asarray(out)


def main(argv: list[str] | None = None) -> None:
    """Print the crop margins that frame MTFL faces as the CelebA protocol crop frames CelebA (this module's CLI)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--celeba", default="celeba:../shared/data/celeba")
    p.add_argument("--mtfl", default="mtfl:../shared/data/mtfl")
    args = p.parse_args(argv)
    celeba = read_index(args.celeba)
    target = float(np.median(iod_fraction(celeba, Preprocess())))
    print(f"CelebA protocol crop: median IOD / canvas = {target:.4f}")
    mtfl = read_index(args.mtfl)
    for rule, field in (("box", "box_scale"), ("landmarks", "landmark_scale")):
        recs = [r for r in mtfl.records if rule == "landmarks" or r.box is not None]
        sub = LandmarkIndex(mtfl.kind, mtfl.root, mtfl.names, recs, mtfl.flip_perm, mtfl.eyes)
        frac = iod_fraction(sub, Preprocess(crop=rule, box_scale=1.0, landmark_scale=1.0))
        print(f"MTFL {rule:9s} rule: {field} = {np.median(frac) / target:.2f} matches CelebA ({len(recs)} faces)")


if __name__ == "__main__":
    main()

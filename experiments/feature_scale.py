"""Per-channel scale of every face representation the plan regresses on (experiments/findings.md).

    python experiments/feature_scale.py [--run-root runs/repro/cpu] [--data SPEC] [--n 64]

Prints the median / min / max over channels of each channel's standard deviation (over images and
positions of its map) for the hypercolumn, the projected (64-D) and NMF-64 features of the MoCo run, the
DVE descriptors and a random-init ResNet18's hypercolumn: the quantity `equinv eval regress --input-scale
std` divides by. The last column, √(Σ channel variances), is the std of a heat-map logit at the
regressor's randn initialisation (before the softmax multiplier): how hard its heat-maps start. Reads the
finished steps of the run root (a source whose weights are missing is named and skipped); runs in seconds
on a CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from equinv.data.preprocess import Preprocess
from equinv.errors import InputError, SkipLog
from equinv.evaluate.regression import load_labelled
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import prepare_input
from equinv.models.regressor import channel_std


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run-root", default="runs/repro/cpu", help="run root of the plan (default runs/repro/cpu)")
    p.add_argument("--data", default="mtfl:../shared/data/mtfl?holdout=1000&part=train",
                   help="images to measure on (default: the MTFL regression training split)")
    p.add_argument("--n", type=int, default=64, help="images (default 64)")
    a = p.parse_args()
    root = Path(a.run_root) / "faces"
    ds, _ = load_labelled(f"{a.data}{'&' if '?' in a.data else '?'}limit={a.n}", Preprocess(size=96), SkipLog())
    x = prepare_input(ds.__getitems__(list(range(len(ds))))["image"], ds.pre, "face")
    sources = {
        "hypercolumn": FeatureSpec(backbone=str(root / "pretrain")),
        "projected 64-D": FeatureSpec("projected", backbone=str(root / "pretrain"),
                                      projector=str(root / "project_d64")),
        "NMF-64": FeatureSpec("nmf", backbone=str(root / "pretrain"),
                              parts=str(root / "parts_nmf64" / "parts.safetensors")),
        "DVE": FeatureSpec(backbone=str(root / "dve")),
        "random-init hypercolumn": FeatureSpec(backbone="random"),
    }
    print(f"{len(ds)} images of {a.data}")
    print("| features | channels | channel std: median | min | max | √(Σ variances) |")
    print("|---|---:|---:|---:|---:|---:|")
    with torch.no_grad():
        for name, spec in sources.items():
            try:
                src = build_source(spec)
            except InputError as e:  # e.g. a fresh machine without the (unarchived) MoCo weights
                print(f"| {name} | skipped: {e} |")
                continue
            std = channel_std([src.maps(x)], src.channels)
            print(f"| {name} | {sum(src.channels)} | {std.median():.3g} | {std.min():.3g} | {std.max():.3g} "
                  f"| {std.square().sum().sqrt():.3g} |")


if __name__ == "__main__":
    main()

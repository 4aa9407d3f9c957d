"""Is matching across identities limited by the feature grid's resolution? (issue 18, target 5)

    python experiments/input_scale_probe.py [--cases hc_aux,proj_dve_aux] [--scales 1,2]

A ResNet18 hypercolumn of a 96-px face has conv5 at 3², conv4 at 6²: coarse beside DVE SmallNet's map. Each case
is matched on 250 same- and 250 different-identity pairs of CelebA mafl_train (the projector runs' validation;
never a test split) with the face first resized bilinearly by each ``--scale`` before the trunk (the descriptor
grid stays 96², so a scale of 2 doubles every map's resolution and halves the objects' size relative to the
receptive fields). Cases read the CPU plan's runs (``runs/repro/cpu``); one line per case and scale.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from equinv.data.preprocess import Preprocess
from equinv.errors import SkipLog
from equinv.evaluate.matching import match_errors
from equinv.features.descriptors import descriptor_fn
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.train.projector import DEFAULT_VAL, _load_set, _val_indices

R = "runs/repro/cpu/"
CASES = {
    "hc_aux": {"backbone": R + "faces_dense_aux/pretrain"},
    "proj_dve_aux": {"backbone": R + "faces_dense_aux/pretrain", "source": "projected",
                     "projector": R + "faces_dense_aux/project_dve_d256"},
    "proj_dve_dense": {"backbone": R + "faces_dense/pretrain", "source": "projected",
                       "projector": R + "faces_dense/project_dve_d256"},
    "random": {"backbone": "random"},
}


class Scaled(nn.Module):
    """A source whose input is resized by ``factor`` before its maps are read."""

    def __init__(self, source: nn.Module, factor: float):
        super().__init__()
        self.source, self.factor = source, factor

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.factor != 1:
            x = F.interpolate(x, scale_factor=self.factor, mode="bilinear", align_corners=False)
        return self.source.maps(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="hc_aux,proj_dve_aux", help=f"comma list of {', '.join(CASES)}")
    ap.add_argument("--scales", default="1,2", help="comma list of input resize factors (default 1,2)")
    a = ap.parse_args()
    torch.set_num_threads(2)
    log = SkipLog()
    ds = _load_set(DEFAULT_VAL, Preprocess(size=96), log, False)
    idx = _val_indices(len(ds), 250, 1)
    print("| case | input scale | match same | match diff | seconds |\n|---|---|---|---|---|")
    for name in a.cases.split(","):
        for f in (float(v) for v in a.scales.split(",")):
            src = build_source(FeatureSpec(arch="resnet18", layers=4, grid=96, **CASES[name]))
            t = time.time()
            r = match_errors(descriptor_fn(Scaled(src, f), 96), ds, n_pairs=250, seed=1, batch=16, indices=idx,
                             progress=False)
            print(f"| {name} | {f:g} | {r['match_error_same']:.2f} | {r['match_error_diff']:.2f} | "
                  f"{time.time() - t:.0f} |", flush=True)


if __name__ == "__main__":
    main()

"""A no-feature reference for finished regression runs: predict the mean of the training shapes.

    python experiments/mean_shape.py [RUN_DIR ...] [--data-root ../shared/data]

For every annotation count and seeded repeat of the first run's ``regression.json`` (default: the archived
``faces_limited_*`` steps), the same training faces' landmarks (the repeat's rows, or all of them) are
averaged and that one shape is predicted for every image of each test set; its IOD error (PCK where the
data has no eyes; mean ± std over repeats) is printed beside each run's own numbers, with each run's
prediction spread (std of its predictions over the first test set's images, normalised coordinates,
repeat 0; the truth's own spread is printed too). Labels only, no network: under a minute on a CPU,
mostly decoding the images to get the crops the regressor saw. Runs made since the reference was added
to ``equinv eval regress`` record it themselves (``mean_shape_iod_error_percent``, ``mean_shape_pck``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from equinv.data.preprocess import Preprocess
from equinv.errors import SkipLog
from equinv.evaluate.metrics import evaluate_predictions
from equinv.evaluate.regression import load_labelled
from equinv.evaluate.regressor_fit import mean_shape
from equinv.features.cache import label_set
from equinv.records import mean_std

ARCHIVE = Path("experiments/archive/cpu/faces/limited")
DEFAULT_RUNS = [ARCHIVE / m for m in ("hc", "proj_d64", "dve", "random")]


def _labels(spec: str, data_root: str):
    ds, _ = load_labelled(spec.replace("../shared/data", data_root), Preprocess(size=96), SkipLog())
    return label_set(ds, spec)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="*", type=Path, default=DEFAULT_RUNS,
                   help="regression run dirs made with the same data and seeds (default: the archived "
                        "faces_limited_* steps)")
    p.add_argument("--data-root", default="../shared/data", help="where the data specs' ../shared/data is")
    a = p.parse_args()
    records = {r: json.loads((r / "regression.json").read_text()) for r in a.runs}
    first = next(iter(records.values()))
    sizes = [r["n_train"] for r in first["runs"]]
    for path, rec in records.items():
        if [r["n_train"] for r in rec["runs"]] != sizes:
            raise SystemExit(f"{path}: annotation counts {[r['n_train'] for r in rec['runs']]} differ from "
                             f"{a.runs[0]}'s {sizes}; give runs made with the same --n-train")
    train = _labels(first["datasets"]["train"], a.data_root)
    tests = {spec: _labels(spec, a.data_root) for spec in first["datasets"]["test"]}
    metric = "iod_error_percent" if train.eyes is not None else "pck"
    print(f"train {first['datasets']['train']} ({len(train)} images); metric {metric}")
    for spec, fs in tests.items():
        print(f"test {spec} ({len(fs)} images): spread of the true landmarks {float(fs.landmarks.std(0).mean()):.3f}")
    names = [r.name for r in records]
    print("| N | test set | mean training shape | " + " | ".join(f"{n} (spread)" for n in names) + " |")
    print("|---:|---|---:|" + "---:|" * len(names))
    for k, run in enumerate(first["runs"]):
        for i, (spec, fs) in enumerate(tests.items()):
            vals = []
            for rep in run["per_repeat"]:
                rows = slice(None) if rep["train_rows"] is None else torch.tensor(rep["train_rows"])
                shape = mean_shape(train.landmarks[rows], train.visible[rows])
                vals.append(evaluate_predictions(shape.expand_as(fs.landmarks).clone(), fs)[metric])
            m, s = mean_std(vals)
            cells = []
            for path, rec in records.items():
                r = rec["runs"][k]
                cell = f"{r['tests'][spec][metric]:.2f}"
                if i == 0:
                    pred = np.load(path / "predictions.npz")[f"pred_{k}_0"]
                    cell += f" ({float(pred.std(0).mean()):.3f})"
                cells.append(cell)
            ref = f"{m:.2f}" + (f" ± {s:.2f}" if len(vals) > 1 else "")
            label = spec.split(":")[0] + (" " + spec.split("?", 1)[1] if "?" in spec else "")
            print(f"| {run['n_train']} | {label} | {ref} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

"""Choosing ``equinv fit``'s defaults: does it beat the mean training shape from 10 labelled faces up, how fast?

    python experiments/fit_defaults.py [--backbones random,RUN] [--sizes 10,50,500] [--settings fit,reference]

Fits landmark models on the first N faces of MTFL's training list minus a held-out 1,000 (``holdout=1000``),
picks the step count on 300 of those held-out faces (``part=val&limit=300``, what ``--val`` does) and scores
them once on 500 faces of the CNN_FacePoint test list (``facepoint:...testImageList.txt&limit=500``), beside
the mean training shape of the same N faces. Settings (every other value is fit's default):

* ``fit``: fit's defaults (:class:`~equinv.landmarks.fit.FitConfig`);
* ``heavy``: fit's defaults at the grid and heat-map count ``eval regress`` uses (48², 50 per landmark);
* ``no-anchor``: fit's defaults without the mean-shape start (``--no-anchor``);
* ``reference``: the reference code's regressor (multiplier 1, heat-map init std 1, no anchor, 48², 50 maps).

One markdown row per (backbone, N, setting): test IOD % of the model and of the mean training shape, the
validation IOD % the step count was picked on, the selected epoch, and wall-clock seconds of the fit with the
features already cached (``--cache-dir``; they are extracted before the first fit and not timed).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from pathlib import Path

from equinv.data.preprocess import Preprocess
from equinv.errors import SkipLog
from equinv.evaluate import regressor_fit as rf
from equinv.evaluate.metrics import evaluate_predictions
from equinv.evaluate.protocol import cached_features
from equinv.evaluate.regression import load_labelled
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.landmarks.fit import FitConfig, fit_model

SETTINGS = {
    "fit": {},
    "heavy": {"grid": 48, "n_heatmaps": 50},
    "no-anchor": {"anchor": False},
    "reference": {"grid": 48, "n_heatmaps": 50, "anchor": False, "softargmax_mul": 1.0, "heatmap_init_std": 1.0},
}


def _specs(root: str, n: int) -> tuple[str, str, str]:
    return (f"mtfl:{root}/mtfl?holdout=1000&part=train&limit={n}",
            f"mtfl:{root}/mtfl?holdout=1000&part=val&limit=300",
            f"facepoint:{root}/mtfl?list=cnn_facepoint_lists/testImageList.txt&limit=500")


def _config(backbone: str, n: int, name: str, root: str, cache: str) -> FitConfig:
    s = dict(SETTINGS[name])
    grid = s.pop("grid", None)
    train, val, _ = _specs(root, n)
    cfg = FitConfig(train=train, val=val, features=FeatureSpec(backbone=backbone, arch="resnet18"), device="cpu",
                    cache_dir=cache, head="regressor", **s)
    return replace(cfg, features=replace(cfg.features, grid=grid)) if grid else cfg


def _test_iod(model, cfg: FitConfig, root: str, n: int) -> tuple[float, float]:
    """Test IOD % of the model and of its training shape on the test split (features from the cache)."""
    test = _specs(root, n)[2]
    ds, _ = load_labelled(test, Preprocess(size=cfg.image_size), SkipLog())
    fs = cached_features(ds, test, model.source, model.meta["input"]["stats"], "cpu", cache_dir=cfg.cache_dir,
                         eyes=ds.eyes)
    grid = int(model.meta["regressor"]["grid"])
    pred = evaluate_predictions(rf.predict(model.regressor, fs, "cpu", grid=grid), fs)["iod_error_percent"]
    train_ds, _ = load_labelled(cfg.train, Preprocess(size=cfg.image_size), SkipLog())
    tfs = cached_features(train_ds, cfg.train, model.source, model.meta["input"]["stats"], "cpu",
                          cache_dir=cfg.cache_dir, eyes=train_ds.eyes)
    shape = rf.mean_shape(tfs.landmarks, tfs.visible)
    ref = evaluate_predictions(shape.expand_as(fs.landmarks).clone(), fs)["iod_error_percent"]
    return pred, ref


def _warm_cache(cfg: FitConfig, root: str, n: int) -> None:
    """Extract (and cache) the train / val / test features once, outside the timed fits."""
    source = build_source(cfg.features.with_defaults(grid=48), "cpu")
    for spec in _specs(root, n):
        ds, kind = load_labelled(spec, Preprocess(size=cfg.image_size), SkipLog())
        cached_features(ds, spec, source, "face", "cpu", cache_dir=cfg.cache_dir, eyes=ds.eyes)


def _row(backbone: str, n: int, name: str, root: str, cache: str) -> str:
    cfg = _config(backbone, n, name, root, cache)
    t0 = time.perf_counter()
    model, info = fit_model(cfg)
    secs = time.perf_counter() - t0
    test, ref = _test_iod(model, cfg, root, n)
    val = model.meta["validation"]["iod_error_percent"]
    label = "random R18" if backbone == "random" else Path(backbone).name
    return (f"| {label} | {n} | {name} | {test:.2f} | {ref:.2f} | {val:.2f} | {info['selected_epoch']} "
            f"| {secs:.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="random", help="comma list: random and/or pretraining run dirs")
    ap.add_argument("--sizes", default="10,50,500")
    ap.add_argument("--settings", default="fit,reference", help=f"comma list of {', '.join(SETTINGS)}")
    ap.add_argument("--data-root", default="../shared/data")
    ap.add_argument("--cache-dir", default="runs/fit_defaults_cache")
    a = ap.parse_args()
    print("| backbone | labelled faces | regressor | test IOD % | mean shape test IOD % | val IOD % | epoch "
          "| fit s |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for backbone in a.backbones.split(","):
        for n in (int(s) for s in a.sizes.split(",")):
            _warm_cache(_config(backbone, n, "fit", a.data_root, a.cache_dir), a.data_root, n)
            for name in a.settings.split(","):
                print(_row(backbone, n, name, a.data_root, a.cache_dir), flush=True)


if __name__ == "__main__":
    main()

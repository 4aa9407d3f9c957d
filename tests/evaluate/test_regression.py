"""Landmark regression on cached frozen features (small settings so that it runs in seconds on a CPU)."""

import json
import math

import numpy as np
import pytest
import torch

from equinv.errors import InputError
from equinv.evaluate.metrics import iod_error
from equinv.evaluate.regression import RegressionConfig, run_regression
from equinv.evaluate.regressor_fit import default_hparams
from equinv.features.spec import FeatureSpec
from equinv.models.hypercolumn import frozen_trunk

TRAIN = "synthetic:48?size=64"
TEST = "synthetic:16?size=64&seed=1"


def _count_images(trunk) -> list[int]:
    seen = [0]
    trunk.conv1.register_forward_hook(lambda m, i, o: seen.__setitem__(0, seen[0] + i[0].shape[0]))
    return seen


def test_regressor_learns_and_backbone_runs_once_per_image(tmp_path):
    trunk = frozen_trunk("resnet18", None, seed=0)
    seen = _count_images(trunk)
    epochs = 30
    cfg = RegressionConfig(train=TRAIN, test=[TEST, TRAIN], epochs=epochs, lr=3e-2, wd=5e-4, device="cpu",
                           features=FeatureSpec(grid=24), n_heatmaps=10, seed=0)
    losses = []
    res = run_regression(cfg, tmp_path, trunk=trunk, log=lambda e: losses.append(e["loss"]))
    # features are computed once per dataset: 48 train + 16 test images (the train spec again as a test reuses
    # its features), plus the 1-image shape probe per dataset, and never again during the epochs
    assert res["backbone_images"] == 48 + 16
    assert seen[0] == 48 + 16 + 2
    assert len(losses) == epochs
    assert losses[-1] < 0.8 * losses[0]
    # the fitted regressor beats the mean shape on the images it was trained on
    test_res, train_res = (res["runs"][0]["tests"][s] for s in (TEST, TRAIN))
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index

    ds = LandmarkDataset(read_index(TRAIN), Preprocess(size=96))
    lm = torch.from_numpy(ds.landmarks) - ds.pre.margin
    mean_shape = iod_error(lm.mean(0, keepdim=True).expand_as(lm), lm, (0, 1)).mean().item()
    assert train_res["iod_error_percent"] < mean_shape
    assert 0 < test_res["iod_error_percent"] < 100
    out = json.loads((tmp_path / "regression.json").read_text())
    for key in ("iod_error_percent", "pck", "per_landmark", "n_train", "repeats", "std", "config", "datasets",
                "seed", "versions"):
        assert key in out
    assert set(out["versions"]) >= {"torch", "torchvision", "equinv"}
    assert len(out["per_landmark"]) == 10


def test_subsets_repeats_and_memmap_cache(tmp_path):
    trunk = frozen_trunk("resnet18", None, seed=0)
    seen = _count_images(trunk)
    cfg = RegressionConfig(train="synthetic:12?size=64", test=["synthetic:4?size=64&seed=1"], epochs=2,
                           n_train=[2, 4], repeats=2, device="cpu", features=FeatureSpec(grid=12), n_heatmaps=2,
                           tile_to=8, cache_dir=str(tmp_path / "cache"), paper_pck=True)
    res = run_regression(cfg, trunk=trunk)
    assert seen[0] == 12 + 4 + 2
    assert [r["n_train"] for r in res["runs"]] == [2, 4]
    assert all(r["repeats"] == 2 and (r["lr"], r["wd"]) == default_hparams(2) for r in res["runs"])
    rows = [rep["train_rows"] for rep in res["runs"][0]["per_repeat"]]
    assert rows[0] != rows[1] and len(rows[0]) == 2
    assert res["std"] is not None and res["paper_pck"] is not None
    # a second run reads the memmapped features back: the backbone is not run again
    res2 = run_regression(cfg)
    assert res2["backbone_images"] == 0
    assert res2["iod_error_percent"] == res["iod_error_percent"]


@pytest.mark.slow
def test_random_backbone_regressor_beats_the_mean_shape_on_held_out_synthetic_faces():
    """256 plain synthetic faces, random ResNet18 hypercolumn on a 24² grid, 60 short epochs (~20 s on 2 cores).

    The held-out error must fall clearly below the mean training shape's error on the same test faces
    Measured: 24.0 % vs 31.5 % IOD (the reference regressor needs far more steps to get low; see the
    evaluation issue's note).
    """
    train, test = "synthetic:256?size=96&clutter=0", "synthetic:64?size=96&clutter=0&seed=1"
    cfg = RegressionConfig(train=train, test=[test], epochs=60, lr=3e-2, wd=5e-4, n_heatmaps=10,
                           features=FeatureSpec(grid=24), device="cpu", seed=0)
    res = run_regression(cfg, trunk=frozen_trunk("resnet18", None, seed=0))
    baseline = _mean_shape_iod(train, test)
    assert res["iod_error_percent"] < 0.9 * baseline, (res["iod_error_percent"], baseline)


def _mean_shape_iod(train: str, test: str) -> float:
    """IOD error (%) of predicting the mean training shape for every test image (final 96-px view)."""
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index

    tr = LandmarkDataset(read_index(train), Preprocess(size=96))
    te = torch.from_numpy(LandmarkDataset(read_index(test), Preprocess(size=96)).landmarks)
    mean_shape = torch.from_numpy(tr.landmarks).mean(0, keepdim=True).expand_as(te)
    return iod_error(mean_shape, te, (0, 1)).mean().item()


@pytest.mark.slow
def test_random_backbone_regressor_reaches_a_low_held_out_error_on_synthetic_faces():
    """With ``softargmax_mul=3`` the regressor localises held-out synthetic faces well from a random ResNet18.

    The reference's ×100 softmax on randn (std 1) heat-map weights over a 960-channel O(1) hypercolumn starts
    every heat-map as a hard argmax, and a few thousand Adam steps leave it near the mean shape (see the
    test above and docs/evaluation.md "Short runs"). Multiplier 3 starts from soft maps. It is the same
    function class: only the logits' scale (equivalently the heat-map weights' init and step size) differs.
    """
    train, test = "synthetic:512?size=64&clutter=0", "synthetic:64?size=64&clutter=0&seed=1"
    cfg = RegressionConfig(train=train, test=[test], epochs=30, lr=3e-2, wd=5e-4, n_heatmaps=10,
                           features=FeatureSpec(grid=24), softargmax_mul=3.0, device="cpu", seed=0)
    res = run_regression(cfg, trunk=frozen_trunk("resnet18", None, seed=0))
    baseline = _mean_shape_iod(train, test)
    err = res["iod_error_percent"]
    assert baseline > 25, baseline  # the faces really vary in pose and shape
    assert err < 12, (err, baseline)
    assert err < 0.4 * baseline, (err, baseline)
    assert res["pck"] > 75, res["pck"]


def test_mean_shape_reference_uses_the_same_training_rows():
    from equinv.data.dataset import LandmarkDataset
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index
    from equinv.evaluate.regressor_fit import mean_shape

    lm = torch.tensor([[[0.0, 0.0], [1.0, 1.0]], [[2.0, 2.0], [9.0, 9.0]]])
    vis = torch.tensor([[True, True], [True, False]])
    assert torch.equal(mean_shape(lm, vis), torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert torch.equal(mean_shape(lm, torch.zeros(2, 2, dtype=torch.bool)), torch.zeros(2, 2))

    train, test = "synthetic:12?size=64", "synthetic:4?size=64&seed=1"
    cfg = RegressionConfig(train=train, test=[test], epochs=1, n_train=[None, 2], repeats=2, device="cpu",
                           features=FeatureSpec(grid=12), n_heatmaps=2, tile_to=8)
    res = run_regression(cfg, trunk=frozen_trunk("resnet18", None, seed=0))
    full, few = res["runs"]
    assert full["tests"][test]["mean_shape_iod_error_percent"] == pytest.approx(_mean_shape_iod(train, test), rel=1e-3)
    tr = torch.from_numpy(LandmarkDataset(read_index(train), Preprocess(size=96)).landmarks)
    te = torch.from_numpy(LandmarkDataset(read_index(test), Preprocess(size=96)).landmarks)
    errs = []
    for rep in few["per_repeat"]:
        shape = tr[rep["train_rows"]].mean(0, keepdim=True).expand_as(te)
        errs.append(iod_error(shape, te, (0, 1)).mean().item())
        assert rep["tests"][test]["mean_shape_iod_error_percent"] == pytest.approx(errs[-1], rel=1e-3)
    assert errs[0] != errs[1]
    assert few["tests"][test]["mean_shape_iod_error_percent"] == pytest.approx(np.mean(errs), rel=1e-3)
    assert few["tests"][test]["mean_shape_pck"] is not None


def test_fan_in_heatmap_init_is_resolved_from_the_training_features(tmp_path):
    from equinv.evaluate.regressor_fit import resolve_heatmap_init

    assert resolve_heatmap_init("fan-in") == "fan-in" and resolve_heatmap_init("0.05") == 0.05
    for bad in ("-1", "0", "nan", "wide"):
        with pytest.raises(InputError, match="heatmap-init-std"):
            resolve_heatmap_init(bad)
    train, test = "synthetic:12?size=64", "synthetic:4?size=64&seed=1"
    trunk = frozen_trunk("resnet18", None, seed=0)
    base = dict(train=train, test=[test], epochs=2, device="cpu", features=FeatureSpec(grid=12), n_heatmaps=2,
                cache_dir=str(tmp_path / "cache"))
    fan = run_regression(RegressionConfig(**base, heatmap_init_std="fan-in"), trunk=trunk)
    used = fan["heatmap_init_std"]
    # the hypercolumn's 960 channels of std ~0.1-1: far below the reference's 1
    assert isinstance(used, float) and 0 < used < 0.5
    # the resolved value is what trained the regressor: giving it explicitly reproduces the run
    same = run_regression(RegressionConfig(**base, heatmap_init_std=used), trunk=trunk)
    assert same["iod_error_percent"] == pytest.approx(fan["iod_error_percent"], abs=1e-9)
    assert same["heatmap_init_std"] == used
    ref = run_regression(RegressionConfig(**base), trunk=trunk)
    assert ref["heatmap_init_std"] == 1.0 and ref["iod_error_percent"] != fan["iod_error_percent"]
    # with per-channel scaling every non-constant input channel has unit std, so fan-in is 1/√C
    scaled = run_regression(RegressionConfig(**base, heatmap_init_std="fan-in", input_scale="std"), trunk=trunk)
    c = sum(scaled["channels"])
    assert 0.99999 / math.sqrt(c) <= scaled["heatmap_init_std"] < 1 / math.sqrt(0.9 * c)  # constant ones: 0

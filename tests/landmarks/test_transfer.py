"""Landmark transfer: the windowed matching head, its leave-one-out choice, and fit / save / load with it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from equinv.features.cache import FeatureSet
from equinv.features.spec import FeatureSpec
from equinv.landmarks.fit import FitConfig, fit_model
from equinv.landmarks.model import load_model
from equinv.landmarks.transfer import fit_transfer, shape_and_spread
from equinv.models.transfer_head import TransferHead, describe, grid_points, sample_at

S = 16  # map side


def _maps(points: torch.Tensor, noise: float, gen: torch.Generator) -> torch.Tensor:
    """One-layer maps ``(B, K + 2, S, S)``: channel k is a blob at landmark k, two channels of noise."""
    b, k, _ = points.shape
    g = grid_points(S).reshape(S, S, 2)
    d2 = ((g[None, None] - points[:, :, None, None]) ** 2).sum(-1)  # (B, K, S, S)
    blobs = torch.exp(-d2 / (2 * 0.12**2))
    return torch.cat([blobs, 0.1 * torch.rand(b, 2, S, S, generator=gen)], 1) + noise * torch.rand(b, k + 2, S, S,
                                                                                           generator=gen)


def _points(n: int, gen: torch.Generator) -> torch.Tensor:
    base = torch.tensor([[-0.4, -0.3], [0.4, -0.3], [0.0, 0.1], [-0.3, 0.5], [0.3, 0.5]])
    return base[None] + 0.08 * torch.randn(n, 5, 2, generator=gen)


def _featureset(n: int, seed: int, noise: float = 0.05) -> FeatureSet:
    gen = torch.Generator().manual_seed(seed)
    pts = _points(n, gen)
    return FeatureSet(maps=[_maps(pts, noise, gen).half()], landmarks=pts, visible=torch.ones(n, 5, dtype=torch.bool),
                      eyes=(0, 1), spec="synthetic")


def test_head_finds_the_landmarks_its_examples_describe():
    train, test = _featureset(6, 0), _featureset(20, 1)
    dense = describe(train.batch(range(6), "cpu"), S)
    desc = sample_at(dense, train.landmarks)
    assert desc.shape == (6, 5, 7)
    shape, spread = shape_and_spread(train.landmarks, train.visible)
    head = TransferHead((7,), desc, train.visible, shape, spread, window=3.0, temperature=0.005)
    pred = head(test.batch(range(20), "cpu"), S)
    err = (pred - test.landmarks).norm(dim=-1)
    base = (shape[None] - test.landmarks).norm(dim=-1)
    assert pred.shape == (20, 5, 2)
    assert err.mean() < 0.5 * base.mean()  # better than the mean shape by far
    assert err.mean() < 2.0 / S  # within a grid cell
    # an invisible landmark in every example falls back to the mean shape; one in some examples is voted on
    vis = train.visible.clone()
    vis[:, 2] = False
    vis[:3, 3] = False
    p2 = TransferHead((7,), desc, vis, shape, spread, 3.0, 0.005)(test.batch(range(20), "cpu"), S)
    assert torch.allclose(p2[:, 2], shape[2].expand(20, 2))
    assert (p2[:, 3] - test.landmarks[:, 3]).norm(dim=-1).mean() < 2.0 / S
    only = TransferHead((7,), desc, train.visible, shape, spread, 3.0, 0.005, shape_only=True)
    assert torch.equal(only(test.batch(range(3), "cpu"), S), shape[None].expand(3, 5, 2))


def test_window_keeps_the_search_near_the_mean_shape():
    """A distractor far from the mean shape, identical to the landmark, is ignored inside a small window."""
    gen = torch.Generator().manual_seed(3)
    train = _featureset(5, 2, noise=0.0)
    dense = describe(train.batch(range(5), "cpu"), S)
    shape, spread = shape_and_spread(train.landmarks, train.visible)
    head = TransferHead((7,), sample_at(dense, train.landmarks), train.visible, shape, spread, 2.0, 0.005)
    pts = _points(1, gen)
    m = _maps(pts, 0.0, gen)
    far = pts.clone()
    far[0, 0] = torch.tensor([0.8, 0.8])  # a second "left eye" blob, far from where eyes are
    m[:, 0] = torch.maximum(m[:, 0], _maps(far, 0.0, gen)[:, 0])
    pred = head([m], S)
    assert (pred[0, 0] - pts[0, 0]).norm() < 2.0 / S


def test_leave_one_out_choice_beats_the_mean_shape_or_keeps_it():
    head, info = fit_transfer(_featureset(12, 4), (7,), S)
    assert info["selection"] == "leave-one-out" and info["held_out"] == 12
    assert not info["shape_only"] and info["held_out_error"] < info["held_out_mean_shape_error"]
    assert len(info["table"]) == 12 and (head.window, head.temperature) == (info["window"], info["temperature"])
    # features without landmark information: no setting may beat the mean shape by chance much
    noise = _featureset(12, 5)
    noise.maps = [torch.rand(noise.maps[0].shape, generator=torch.Generator().manual_seed(0)).half()]
    head2, info2 = fit_transfer(noise, (7,), S)
    assert info2["shape_only"] == (info2["held_out_error"] >= info2["held_out_mean_shape_error"])
    _, one = fit_transfer(_featureset(1, 6), (7,), S)
    assert one["selection"].startswith("defaults")


@pytest.fixture(scope="module")
def transfer_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("transfer")
    cfg = FitConfig(train="synthetic:10?size=64", features=FeatureSpec(grid=24), device="cpu")  # auto: ≤ 64 → transfer
    model, info = fit_model(cfg)
    model.save(d)
    return d, info


def test_fit_auto_uses_transfer_for_few_labels_and_it_loads_in_a_new_process(transfer_dir, tmp_path):
    from equinv.data.spec import read_index

    d, info = transfer_dir
    meta = json.loads((d / "model.json").read_text())
    assert meta["regressor"]["kind"] == "transfer" and meta["regressor"]["n_examples"] == 10
    assert info["selection"] == "leave-one-out" and meta["training"]["steps"] == 0
    paths = [str(r.path) for r in read_index("synthetic:6?size=64&seed=1").records]
    here = load_model(d).predict(paths)
    code = ("import sys, numpy as np, equinv; m = equinv.load(sys.argv[1]); "
            "np.save(sys.argv[2], m.predict(sys.argv[3:]))")
    subprocess.run([sys.executable, "-c", code, str(d), str(tmp_path / "p.npy"), *paths], check=True, timeout=300)
    assert here.shape == (6, 10, 2) and np.abs(here - np.load(tmp_path / "p.npy")).max() <= 1e-5


def test_fit_auto_with_val_keeps_the_better_head():
    cfg = FitConfig(train="synthetic:10?size=64", val="synthetic:8?size=64&seed=2", features=FeatureSpec(grid=12),
                    steps=4, n_heatmaps=2, device="cpu")
    model, _ = fit_model(cfg)
    t, v = model.meta["training"], model.meta["validation"]
    choice = t["head_choice"]
    assert set(choice) == {"regressor", "transfer"}
    kept = model.meta["regressor"]["kind"]
    assert v["iod_error_percent"] == pytest.approx(min(c["iod_error_percent"] for c in choice.values()))
    assert v["iod_error_percent"] == pytest.approx(choice[kept]["iod_error_percent"])


def test_describe_at_cell_centres_equals_the_whole_grid():
    gen = torch.Generator().manual_seed(7)
    maps = [torch.randn(2, 6, 3, 3, generator=gen), torch.randn(2, 4, 6, 6, generator=gen),
            torch.randn(2, 3, 12, 12, generator=gen)]
    from equinv.models.transfer_head import describe_at

    pts = grid_points(12)
    assert torch.allclose(describe_at(maps, pts), describe(maps, 12).flatten(2), atol=1e-6)
    assert torch.allclose(describe_at(maps, pts[[0, 5, 143]]), describe(maps, 12).flatten(2)[:, :, [0, 5, 143]],
                          atol=1e-6)

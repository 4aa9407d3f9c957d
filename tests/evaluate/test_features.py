"""`equinv features`: streamed exports equal the in-memory hypercolumn."""

from __future__ import annotations

import json

import numpy as np
import torch
from safetensors.torch import load_file

from equinv.augment.photometric import FACE_MEAN, FACE_STD, normalize
from equinv.cli import main
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.features.export import export_features
from equinv.features.spec import FeatureSpec
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk

SPEC = "synthetic:6?size=64"


def _reference(size: int, normalize_layers: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    ds = LandmarkDataset(read_index(SPEC), Preprocess(size=96))
    ds.prepare(progress=False)
    x = final_view(ds.__getitems__(list(range(len(ds)))), ds.pre)["image"].float() / 255
    hc = Hypercolumn(frozen_trunk("resnet18", None, seed=0), size=size, normalize=False)
    with torch.no_grad():
        xin = normalize(x, FACE_MEAN, FACE_STD)
        dense = hc(xin)
        if normalize_layers:
            dense = torch.cat([torch.nn.functional.normalize(d, dim=1) for d in dense.split(hc.channels, 1)], 1)
        return dense, hc.maps(xin)


def test_dense_npy_matches_hypercolumn(tmp_path):
    res = export_features(SPEC, tmp_path / "f.npy", FeatureSpec(grid=24), dtype="float32", batch=4, progress=False,
                          normalize_features=True)
    arr = np.load(res.files[next(iter(res.files))], mmap_mode="r")
    dense, _ = _reference(24, True)
    assert arr.shape == tuple(dense.shape)
    assert np.abs(arr - dense.numpy()).max() < 1e-4
    info = json.loads(res.sidecar.read_text())
    assert [im["index"] for im in info["images"]] == list(range(6)) and info["arch"] == "resnet18"


def test_factorised_safetensors_and_cli(tmp_path, capsys):
    out = tmp_path / "f.safetensors"
    assert main(["features", "--data", SPEC, "--out", str(out), "--dtype", "float32", "--batch", "4",
                 "--quiet"]) == 0
    tensors = load_file(str(out))
    _, maps = _reference(48, False)
    native = [v for k, v in sorted(tensors.items()) if v.ndim == 4]
    assert sorted(t.shape[-1] for t in native) == sorted(m.shape[-1] for m in maps)
    for m in maps:
        match = [t for t in native if t.shape == m.shape]
        assert any(torch.allclose(t, m, atol=1e-4) for t in match)
    assert main(["features", "--data", SPEC, "--out", str(tmp_path / "x.npy"), "--backbone",
                 str(tmp_path / "missing.safetensors"), "--quiet"]) == 2
    assert "missing.safetensors" in capsys.readouterr().err

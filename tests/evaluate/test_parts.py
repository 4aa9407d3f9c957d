"""NMF parts and PCA maps of hypercolumns (equinv.evaluate.parts), NMF descriptors and ``equinv parts``."""

from __future__ import annotations

import json

import torch
from PIL import Image

from equinv.cli import main
from equinv.evaluate.parts import PartsModel, fit_nmf, fit_parts, fit_pca, part_labels, sample_pixels
from equinv.features.descriptors import describe
from equinv.features.sources import NMFSource
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps


def _nonneg(n=600, d=40, k=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, k, generator=g) @ torch.rand(k, d, generator=g) + 0.01 * torch.rand(n, d, generator=g)


def test_nmf_non_negative_shapes_and_projection():
    x = _nonneg()
    m = fit_nmf(x, dim=4, seed=0)
    assert m.components.shape == (4, 40) and (m.components >= 0).all()
    w = m.transform(x)
    assert w.shape == (600, 4) and (w >= 0).all()
    rel = (w @ m.components - x).norm() / x.norm()
    assert rel < 0.05
    maps = m.transform_maps(x[:36].T.reshape(1, 40, 6, 6))
    assert maps.shape == (1, 4, 6, 6) and part_labels(maps).shape == (1, 6, 6)


def test_save_load_round_trip(tmp_path):
    x = _nonneg()
    for m in (fit_nmf(x, dim=3, max_iter=1000, meta={"arch": "resnet18"}), fit_pca(x, dim=3, centered=False)):
        p = m.save(tmp_path / f"{m.method}.safetensors")
        assert p.with_suffix(".json").exists()
        info = json.loads(p.with_suffix(".json").read_text())
        assert info["method"] == m.method and info["dim"] == 3
        back = PartsModel.load(p)
        assert back.method == m.method and back.centered == m.centered and back.layerwise == m.layerwise
        for k in ("components", "mean", "lo", "hi"):
            assert torch.equal(getattr(back, k), getattr(m, k))
        assert torch.allclose(back.transform(x[:50]), m.transform(x[:50]))
    assert PartsModel.load(tmp_path / "nmf.safetensors").meta["arch"] == "resnet18"


def test_pca_centred_vs_uncentred_and_sign_fixed():
    x = _nonneg(d=20) + 1.0
    c, u = fit_pca(x, 3, centered=True), fit_pca(x, 3, centered=False)
    assert not torch.allclose(c.components.abs(), u.components.abs(), atol=1e-3)
    assert torch.count_nonzero(u.mean) == 0 and torch.allclose(c.mean, x.mean(0))
    # signs do not depend on the sample order
    again = fit_pca(x[torch.randperm(len(x))], 3, centered=True)
    assert torch.allclose(again.components, c.components, atol=1e-4)
    s = c.scaled(c.transform(x).T.reshape(1, 3, 20, 30))
    assert s.min() >= 0 and s.max() <= 1


def test_sampling_is_bounded_and_nmf_descriptors_unit_norm():
    hc = Hypercolumn(frozen_trunk("resnet18", None, seed=0), reference_taps(4), 16)
    imgs = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    x = sample_pixels(hc, imgs, size=16, max_pixels=150, seed=0)
    assert x.shape == (150, hc.dim) and (x >= 0).all()
    m = fit_parts(x, "nmf", 5, seed=0)
    d = describe(imgs, NMFSource(hc, m, 16), 16)
    assert d.shape == (3, 5, 16, 16)
    assert torch.allclose(d.norm(dim=1), torch.ones(3, 16, 16), atol=1e-4)
    h = describe(imgs[:1], hc, 16)
    assert h.shape == (1, hc.dim, 16, 16)
    assert torch.allclose(h[:, :512].norm(dim=1), torch.ones(1, 16, 16), atol=1e-4)  # conv5 block


def test_cli_parts_nmf_and_pca(tmp_path):
    for method in ("nmf", "pca"):
        out = tmp_path / method
        rc = main(["parts", "--data", "synthetic:8?size=64", "--method", method, "--dim", "4", "--grid", "24",
                   "--max-pixels", "1500", "--n-figure", "4", "--cell", "48", "--out", str(out), "--quiet",
                   "--device", "cpu"])
        assert rc == 0
        m = PartsModel.load(out / "parts.safetensors")
        assert m.method == method and m.dim == 4 and m.meta["n_pixels"] == 1500
        fig = Image.open(out / ("parts.png" if method == "nmf" else "pca.png"))
        assert fig.size[0] > 0

import math

import pytest
import torch

from equinv.augment.tps import TPSConfig
from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.evaluate.matching import match_errors
from equinv.features.sources import layerwise_normalize

IDENTITY = TPSConfig(0.0, 0.0, 0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def tiny():
    ds = LandmarkDataset(read_index("synthetic:8?size=64"), Preprocess(size=96), cache=False)
    return ds


def positional(x: torch.Tensor) -> torch.Tensor:
    """Fourier codes of the pixel position: the cosine is largest exactly at the same pixel."""
    b, _, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                            indexing="ij")
    codes = []
    for k in range(6):
        om = math.pi / 96 * 2**k
        codes += [torch.cos(om * xs), torch.sin(om * xs), torch.cos(om * ys), torch.sin(om * ys)]
    return torch.nn.functional.normalize(torch.stack(codes), dim=0).expand(b, -1, -1, -1)


def constant(x: torch.Tensor) -> torch.Tensor:
    return torch.ones(x.shape[0], 4, x.shape[-2], x.shape[-1])


def test_identity_warp_positional_descriptors_near_zero(tiny):
    r = match_errors(positional, tiny, n_pairs=4, tps=IDENTITY, batch=2, progress=False)
    assert r["n_pairs"] == 4 and r["n_same"] == 4 * len(tiny.names)
    assert r["match_error_same_px"] <= math.sqrt(0.5) + 1e-4  # rounding to the grid only
    assert r["match_error_same"] <= math.sqrt(0.5) * 69 / 95 + 1e-4
    const = match_errors(constant, tiny, n_pairs=4, tps=IDENTITY, batch=2, progress=False)
    assert const["match_error_same_px"] > 20 and const["match_error_diff_px"] > 20


def test_warped_positional_error_and_batch_independence(tiny):
    a = match_errors(positional, tiny, n_pairs=4, batch=1, progress=False)
    b = match_errors(positional, tiny, n_pairs=4, batch=3, progress=False)
    assert a == pytest.approx(b)
    # positional codes ignore the warp: the error is the landmark displacement, > 0 but bounded
    assert 0.3 < a["match_error_same_px"] < 15
    c = match_errors(positional, tiny, n_pairs=4, batch=4, seed=2, progress=False)
    assert c["match_error_same"] != a["match_error_same"]


def test_layerwise_normalize():
    x = torch.randn(2, 5, 3, 3)
    y = layerwise_normalize(x, (2, 3))
    assert torch.allclose(y[:, :2].norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)
    assert torch.allclose(y[:, 2:].norm(dim=1), torch.ones(2, 3, 3), atol=1e-5)


@pytest.mark.realdata
@pytest.mark.slow
def test_hypercolumn_matching_on_mafl(shared_data):
    from equinv.features.descriptors import descriptor_fn
    from equinv.models.hypercolumn import Hypercolumn, frozen_trunk

    ds = LandmarkDataset(read_index(f"celeba:{shared_data / 'celeba'}?split=mafl_test"), Preprocess(size=96))
    ds.prepare(progress=False)
    hc = Hypercolumn(frozen_trunk("resnet18", None, seed=0))
    r = match_errors(descriptor_fn(hc, 96), ds, n_pairs=6, batch=3, progress=False)
    assert r["n_same"] > 20 and r["n_diff"] > 20
    # even random conv features match a slightly warped copy of the same face far better than another face
    assert r["match_error_same"] < 5.0 < r["match_error_diff"]

"""Factorised similarity rows (equinv.features.similarity) against the materialised descriptors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.evaluate.matching import match_errors
from equinv.features.descriptors import descriptor_fn, descriptor_maps
from equinv.features.similarity import GridDescriptors, argmax_points

GRID = 16


class FixedMaps(nn.Module):
    """A source whose ``maps`` are given tensors (below, at and above the grid)."""

    def __init__(self, maps: list[torch.Tensor]):
        super().__init__()
        self._maps = maps

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self._maps


def random_maps(batch: int, device, sides=(3, 5, 8, GRID, 20), seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # ReLU-like non-negative maps, as a backbone gives, and one signed map
    maps = [torch.rand(batch, 4 + i, s, s, generator=g) for i, s in enumerate(sides)]
    maps[-1] = maps[-1] - 0.5
    return [m.to(device) for m in maps]


def reference(maps, points, layerwise):
    """Straightforward computation: materialise the grid, read the rows, dot with every pixel."""
    dense = descriptor_maps(FixedMaps(maps), None, GRID, layerwise)  # (B, D, S, S)
    ix, iy = points[..., 0].round().long(), points[..., 1].round().long()
    rows = dense.flatten(2).gather(2, (iy * GRID + ix)[:, None].expand(-1, dense.shape[1], -1)).transpose(1, 2)
    return rows, dense


@pytest.mark.parametrize("layerwise", [True, False])
def test_rows_and_similarity_equal_the_materialised_grid(device, layerwise):
    maps = random_maps(6, device)
    points = torch.rand(3, 7, 2, generator=torch.Generator().manual_seed(1)).to(device) * (GRID - 1)
    g = GridDescriptors(maps, GRID, layerwise)
    q = g.select(slice(0, 3)).at(points)
    rows, dense = reference(maps, points, layerwise)
    assert q.shape == (3, 7, sum(m.shape[1] for m in maps))
    torch.testing.assert_close(q, rows, atol=1e-6, rtol=1e-5)
    sim = g.select(slice(3, 6)).similarity(q)
    want = torch.bmm(rows, dense[3:].flatten(2)).unflatten(2, (GRID, GRID))
    torch.testing.assert_close(sim, want, atol=1e-5, rtol=1e-5)
    assert torch.equal(argmax_points(sim), argmax_points(want))


def test_query_at_its_own_cell_is_the_best_match(device):
    maps = random_maps(2, device, sides=(3, 6, 12))
    g = GridDescriptors(maps, GRID)
    pts = torch.tensor([[[0.0, 0.0], [15.0, 15.0], [7.2, 3.9]]], device=device).expand(2, -1, -1)
    sim = g.similarity(g.at(pts))
    # a unit-norm block matched with itself: one per block at the query's own cell, the maximum
    assert torch.allclose(sim.amax((-2, -1)), torch.full((2, 3), 3.0, device=device), atol=1e-5)
    assert torch.equal(argmax_points(sim), pts.round())


def test_argmax_points_order_and_ties():
    sim = torch.zeros(1, 2, 4, 5)
    sim[0, 0, 3, 1] = 1.0  # y=3, x=1
    assert argmax_points(sim).tolist() == [[[1.0, 3.0], [0.0, 0.0]]]  # all tied: the first pixel


@pytest.mark.parametrize("dtype,tol", [(torch.float16, 2e-3), (torch.bfloat16, 2e-2)])
def test_reduced_precision_storage_agrees(device, dtype, tol):
    maps = random_maps(16, device, sides=(3, 6, 12, GRID))
    g = GridDescriptors(maps, GRID)
    pts = torch.rand(8, 10, 2, generator=torch.Generator().manual_seed(2)).to(device) * (GRID - 1)
    q = g.select(slice(0, 8)).at(pts)
    full = g.select(slice(8, 16)).similarity(q)
    low = g.select(slice(8, 16)).to(dtype)
    assert all(m.dtype == dtype for m in low.maps)
    sim = low.similarity(q)
    assert sim.dtype == torch.float32
    assert (sim - full).abs().max() < tol * 4  # four unit-norm blocks, each off by < tol
    # the reduced-precision argmax is the fp32 argmax, or a pixel whose fp32 cosine is within tolerance of it
    j16, j32 = sim.flatten(2).argmax(-1), full.flatten(2).argmax(-1)
    at16 = full.flatten(2).gather(2, j16[..., None])[..., 0]
    assert (at16 >= full.flatten(2).amax(-1) - 2 * tol * 4).all()
    assert (j16 == j32).float().mean() >= 0.9


def test_similarity_checks_the_dimension():
    g = GridDescriptors(random_maps(1, "cpu", sides=(3,)), GRID)
    with pytest.raises(ValueError, match="4-d"):
        g.similarity(torch.zeros(1, 2, 5))


class TinySource(nn.Module):
    """A cheap image-dependent source: two ReLU conv maps at 24² and 6² (a hypercolumn's shape, small)."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.a = nn.Parameter(torch.randn(8, 3, 3, 3, generator=g))
        self.b = nn.Parameter(torch.randn(16, 8, 3, 3, generator=g))

    def maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        a = F.relu(F.conv2d(F.avg_pool2d(x, 4), self.a, padding=1))
        return [a, F.relu(F.conv2d(F.avg_pool2d(a, 4), self.b, padding=1))]


@pytest.fixture(scope="module")
def tiny():
    return LandmarkDataset(read_index("synthetic:8?size=64"), Preprocess(size=96), cache=False)


def test_matching_factorised_equals_materialised(tiny):
    fn = descriptor_fn(TinySource(), 96)
    factorised = match_errors(fn, tiny, n_pairs=4, batch=3, progress=False)
    dense = match_errors(lambda x: fn(x), tiny, n_pairs=4, batch=3, chunk=2, progress=False)
    assert factorised == pytest.approx(dense, rel=1e-6)
    assert match_errors(fn, tiny, n_pairs=4, batch=4, progress=False) == pytest.approx(factorised, rel=1e-6)
    # the views' chunking bounds memory only: one view per source call gives the same result
    assert match_errors(fn, tiny, n_pairs=4, batch=3, chunk=1, progress=False) == pytest.approx(factorised, rel=1e-6)
    half = match_errors(fn, tiny, n_pairs=4, batch=4, storage=torch.bfloat16, progress=False)
    assert half["n_same"] == factorised["n_same"]
    assert half["match_error_diff"] == pytest.approx(factorised["match_error_diff"], rel=0.05)

"""equinv.coords: round trips, agreement with torch's own conventions, flips and the TPS path (hypothesis)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.geometry.transform import warp_points_tps

from equinv import coords as C
from equinv.augment import geometric as G
from equinv.augment import tps as T

FAST = settings(max_examples=40, deadline=None)
sides = st.integers(2, 400)
coords = st.floats(-50.0, 450.0, allow_nan=False)
seeds = st.integers(0, 2**31 - 1)


def _points(seed: int, n: int = 9, lo: float = -20.0, hi: float = 300.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 2, generator=g, dtype=torch.float64) * (hi - lo) + lo


# ----------------------------------------------------------------------------- round trips
@FAST
@given(p=coords, size=sides, align=st.booleans())
def test_pixel_norm_round_trip(p, size, align):
    n = C.pix_to_norm(p, size, align)
    assert C.norm_to_pix(n, size, align) == pytest.approx(p, abs=1e-9)
    a, b = C.norm_affine(size, align)
    assert a * p + b == pytest.approx(n, abs=1e-12)
    assert C.norm_scale(size, align) * a == pytest.approx(1.0)


@FAST
@given(seed=seeds, h=sides, w=sides, align=st.booleans())
def test_points_norm_round_trip_torch_and_numpy(seed, h, w, align):
    p = _points(seed)
    n = C.points_to_norm(p, (h, w), align)
    assert torch.allclose(C.points_from_norm(n, (h, w), align), p, atol=1e-9)
    n_np = C.points_to_norm(p.numpy(), (h, w), align)
    assert isinstance(n_np, np.ndarray) and np.array_equal(n_np, n.numpy())  # same formula, same bits
    # x is normalised by the width, y by the height
    assert torch.equal(n[:, 0], C.pix_to_norm(p[:, 0], w, align))
    assert torch.equal(n[:, 1], C.pix_to_norm(p[:, 1], h, align))


def test_normalised_frame_ends():
    # align_corners=True: border pixel centres at ±1; False: outer pixel edges at ±1
    assert C.pix_to_norm(0.0, 96, True) == -1.0 and C.pix_to_norm(95.0, 96, True) == 1.0
    assert C.pix_to_norm(-0.5, 96, False) == -1.0 and C.pix_to_norm(95.5, 96, False) == 1.0


@FAST
@given(seed=seeds, x0=st.floats(-60, 60), y0=st.floats(-60, 60), bw=st.floats(4, 400), bh=st.floats(4, 400),
       canvas=st.one_of(st.integers(8, 300), st.tuples(st.integers(8, 300), st.integers(8, 300))))
def test_canvas_source_round_trip(seed, x0, y0, bw, bh, canvas):
    box = (x0, y0, x0 + bw, y0 + bh)
    p = _points(seed)
    c = C.source_to_canvas(p, box, canvas)
    assert torch.allclose(C.canvas_to_source(c, box, canvas), p, atol=1e-7)
    # the box's pixel edges land on the canvas's pixel edges
    ch, cw = (canvas, canvas) if isinstance(canvas, int) else canvas
    edges = torch.tensor([[x0 - 0.5, y0 - 0.5], [x0 + bw - 0.5, y0 + bh - 0.5]], dtype=torch.float64)
    want = torch.tensor([[-0.5, -0.5], [cw - 0.5, ch - 0.5]], dtype=torch.float64)
    assert torch.allclose(C.source_to_canvas(edges, box, canvas), want, atol=1e-7)


def test_crop_resize_matrix_is_canvas_to_source():
    boxes = torch.tensor([[3, 7, 50, 61], [0, 0, 136, 136], [10, 2, 30, 90]])
    m = G.crop_resize_matrix(boxes, (40, 56))
    p = _points(1, 5, 0, 50)
    for b, (top, left, h, w) in enumerate(boxes.tolist()):
        want = C.canvas_to_source(p, (left, top, left + w, top + h), (40, 56))
        assert torch.allclose(G.apply_affine_points(m[b : b + 1], p[None])[0], want, atol=1e-12)


@FAST
@given(seed=seeds, a=st.tuples(sides, sides), b=st.tuples(sides, sides))
def test_resize_round_trip(seed, a, b):
    p = _points(seed)
    q = C.resize_points(p, a, b)
    assert torch.allclose(C.resize_points(q, b, a), p, atol=1e-9)
    # pixel edges map to pixel edges
    edge = torch.tensor([[-0.5, -0.5], [a[1] - 0.5, a[0] - 0.5]], dtype=torch.float64)
    want = torch.tensor([[-0.5, -0.5], [b[1] - 0.5, b[0] - 0.5]], dtype=torch.float64)
    assert torch.allclose(C.resize_points(edge, a, b), want, atol=1e-9)


@FAST
@given(seed=seeds, width=sides, margin=st.one_of(st.integers(0, 40), st.tuples(st.integers(0, 40), st.integers(0, 40))))
def test_flip_twice_and_slice_and_back(seed, width, margin):
    p = _points(seed)
    assert torch.allclose(C.hflip_points(C.hflip_points(p, width), width), p, atol=1e-12)
    v = C.canvas_to_view(p, margin)
    assert torch.allclose(C.view_to_canvas(v, margin), p, atol=1e-12)
    top, left = (margin, margin) if isinstance(margin, int) else margin
    assert torch.allclose(v, p - torch.tensor([left, top], dtype=p.dtype))


# ----------------------------------------------------------------------------- torch's conventions
@FAST
@given(h=st.integers(2, 40), w=st.integers(2, 40), data=st.data(), align=st.booleans())
def test_grid_sample_reads_the_pixel_at_its_normalised_point(h, w, data, align):
    i, j = data.draw(st.integers(0, h - 1)), data.draw(st.integers(0, w - 1))
    img = torch.zeros(1, 1, h, w, dtype=torch.float64)
    img[0, 0, i, j] = 1.0
    pts = torch.tensor([[j, i], [j + 1, i], [j, i - 1]], dtype=torch.float64)  # the pixel and two neighbours
    grid = C.points_to_norm(pts, (h, w), align)
    out = F.grid_sample(img, grid[None, None], mode="bilinear", align_corners=align)[0, 0, 0]
    assert out[0].item() == pytest.approx(1.0, abs=1e-9)
    assert out[1:].abs().max().item() < 1e-9


def _blob(h: int, w: int, cx: float, cy: float, sigma: float) -> torch.Tensor:
    ys = torch.arange(h, dtype=torch.float64)[:, None]
    xs = torch.arange(w, dtype=torch.float64)[None]
    return torch.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma * sigma))


def _centre_of_mass(img: torch.Tensor) -> torch.Tensor:
    h, w = img.shape
    m = img.sum()
    return torch.stack(((img.sum(0) * torch.arange(w, dtype=img.dtype)).sum() / m,
                        (img.sum(1) * torch.arange(h, dtype=img.dtype)).sum() / m))


@FAST
@given(h=st.integers(24, 64), w=st.integers(24, 64), fy=st.floats(0.5, 2.0), fx=st.floats(0.5, 2.0),
       ux=st.sampled_from([0.3, 0.7]), uy=st.sampled_from([0.3, 0.7]), antialias=st.booleans())
def test_interpolate_moves_a_blob_to_the_resize_point(h, w, fy, fx, ux, uy, antialias):
    h2, w2 = max(12, round(h * fy)), max(12, round(w * fx))
    img = _blob(h, w, ux * (w - 1), uy * (h - 1), 3.0)  # off-centre, where the conventions disagree
    out = F.interpolate(img[None, None], size=(h2, w2), mode="bilinear", align_corners=False,
                        antialias=antialias)[0, 0]
    want = C.resize_points(_centre_of_mass(img), (h, w), (h2, w2))
    assert (_centre_of_mass(out) - want).abs().max().item() < 0.03


def test_resize_differs_from_the_corner_conventions():
    # 32 → 64 px at x = 8: the pixel-centre map gives 16.5, where x·s gives 16 and align_corners 16.26
    p = torch.tensor([[8.0, 8.0]], dtype=torch.float64)
    img = _blob(32, 32, 8.0, 8.0, 2.0)
    out = F.interpolate(img[None, None], size=(64, 64), mode="bilinear", align_corners=False)[0, 0]
    assert torch.allclose(C.resize_points(p, 32, 64), torch.tensor([[16.5, 16.5]], dtype=torch.float64))
    assert (_centre_of_mass(out) - 16.5).abs().max().item() < 0.03


# ----------------------------------------------------------------------------- flips
@FAST
@given(h=st.integers(2, 30), w=st.integers(2, 30), seed=seeds)
def test_flip_matches_torch_flip_and_permutation(h, w, seed):
    g = torch.Generator().manual_seed(seed)
    k = 6
    pts = torch.stack((torch.randint(0, w, (k,), generator=g), torch.randint(0, h, (k,), generator=g)), -1).double()
    perm = (1, 0, 2, 4, 3, 5)  # two left/right pairs and two centre points
    img = torch.zeros(k, h, w)
    img[torch.arange(k), pts[:, 1].long(), pts[:, 0].long()] = 1.0  # one image per point
    flipped = img.flip(-1)
    moved = C.hflip_points(pts, w, perm)
    for i in range(k):  # point i after the flip is the mirror of point perm[i]
        y, x = (flipped[perm[i]] == 1).nonzero()[0].tolist()
        assert moved[i].tolist() == [float(x), float(y)]
    assert torch.equal(C.hflip_points(moved, w, perm), pts)
    lm, vis = G.hflip_landmarks(pts[None].repeat(2, 1, 1), torch.ones(2, k, dtype=torch.bool),
                                torch.tensor([True, False]), w, perm)
    assert torch.equal(lm[0], moved) and torch.equal(lm[1], pts)
    with pytest.raises(ValueError, match="flip_perm"):
        C.hflip_points(pts, w, (1, 0))


# ----------------------------------------------------------------------------- the TPS path
@settings(max_examples=10, deadline=None)
@given(seed=seeds, h=st.integers(16, 72), w=st.integers(16, 72))
def test_tps_maps_agree_with_the_module_normalisation(seed, h, w):
    g = torch.Generator().manual_seed(seed)
    params = T.sample_tps(2, "dve", g)
    pts = torch.stack((torch.rand(2, 7, generator=g, dtype=torch.float64) * (w - 1),
                       torch.rand(2, 7, generator=g, dtype=torch.float64) * (h - 1)), -1)
    n = C.points_to_norm(pts, (h, w), align_corners=True)
    kornia = warp_points_tps(n, params.centers, params.kernel_weights, params.affine)
    want = C.points_from_norm(kornia, (h, w), align_corners=True)
    assert torch.allclose(T.map_points(params, pts, h, w), want, atol=1e-9)
    dense = T.sampling_map(params, h, w, dtype=torch.float64)
    dense_n = T.sampling_map(params, h, w, normalized=True, dtype=torch.float64)
    assert torch.allclose(C.points_to_norm(dense, (h, w), align_corners=True), dense_n, atol=1e-12)


@settings(max_examples=4, deadline=None)
@given(seed=seeds, h=st.integers(24, 48), w=st.integers(24, 48))
def test_tps_landmarks_are_the_preimages_under_the_map(seed, h, w):
    g = torch.Generator().manual_seed(seed)
    params = T.sample_tps(1, "dve", g)
    pts = (torch.rand(1, 5, 2, generator=g, dtype=torch.float64) * 0.5 + 0.25) * torch.tensor([w - 1.0, h - 1.0])
    inv, ok = T.warp_landmarks(params, pts, h, w, return_valid=True)
    back = T.map_points(params, inv, h, w)
    assert ok.float().mean().item() > 0.5  # most points stay in view
    assert (back - pts).norm(dim=-1)[ok].max().item() < 1e-3


def test_identity_tps_keeps_pixels():
    pts = _points(3, 9, 0, 63)
    assert torch.allclose(T.map_points(T.identity_tps(1), pts, 48, 64)[0], pts, atol=1e-9)


# ----------------------------------------------------------------------------- frames and bounds
def test_dve_frame():
    assert C.to_dve70(torch.tensor(0.0), 96).item() == 0.0
    assert C.to_dve70(torch.tensor(95.0), 96).item() == pytest.approx(69.0)


@FAST
@given(p=st.floats(-10, 200), size=st.integers(2, 200))
def test_dve_frame_is_the_70px_align_corners_frame(p, size):
    n = C.pix_to_norm(p, size, True)
    assert C.to_dve70(p, size) == C.norm_to_pix(n, C.DVE_SIDE, True)  # same bits: halving is exact


def test_inside_bounds_torch_and_numpy():
    pts = torch.tensor([[-0.5, 0.0], [95.5, 10.0], [-0.51, 0.0], [95.51, 0.0], [0.0, 47.5], [0.0, 47.6]])
    want = [True, True, False, False, True, False]
    assert C.inside(pts, (48, 96)).tolist() == want
    assert C.inside(pts.numpy(), (48, 96)).tolist() == want
    assert C.inside(pts, (48, 96), margin=0).tolist() == [False, False, False, False, False, False]
    assert C.inside(torch.tensor([[2.0, 2.0], [1.9, 5.0]]), 10, margin=-2).tolist() == [True, False]


def test_nearest_pixel_rounds_and_clamps():
    pts = torch.tensor([[0.49, 0.51], [-3.0, 12.0], [4.5, 5.5]])
    ix, iy = C.nearest_pixel(pts, (10, 8))
    assert ix.tolist() == [0, 0, 4] and iy.tolist() == [1, 9, 6]  # half-to-even, as torch.round
    jx, jy = C.nearest_pixel(pts.numpy(), (10, 8))
    assert jx.tolist() == ix.tolist() and jy.tolist() == iy.tolist()

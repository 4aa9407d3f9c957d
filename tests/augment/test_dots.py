"""The dot test: every geometric op moves landmarks exactly where it moves the pixels (< 1 px)."""

from __future__ import annotations

import pytest
import torch

from equinv import coords as C
from equinv.augment import geometric as G
from equinv.augment import recipes as R
from equinv.augment import tps as T
from tests.augment.dots import dot_errors, dot_images

B, K, S = 6, 5, 64
TOL = 1.0


def _setup(device, seed=0, size=S, lo=0.3, hi=0.7):
    g = torch.Generator().manual_seed(seed)
    lm = (torch.rand(B, K, 2, generator=g) * (hi - lo) + lo) * (size - 1)
    lm = lm.to(device)
    return g, dot_images(lm, size, size), lm, torch.ones(B, K, dtype=torch.bool, device=device)


def _check(name, out, lm, vis, min_points=10):
    err = dot_errors(out, lm, vis)
    assert err.numel() >= min_points, f"{name}: only {err.numel()} dots checked"
    print(f"[dot] {name}: max {err.max().item():.3f} px over {err.numel()} dots")
    assert err.max().item() < TOL, f"{name}: max dot error {err.max().item():.3f} px"
    return err


def test_dot_rrc(device):
    g, img, lm, vis = _setup(device)
    out, lm2, vis2 = G.random_resized_crop(img, lm, vis, 48, g, scale=(0.3, 1.0))
    assert out.shape == (B, K, 48, 48)
    _check("rrc", out, lm2, vis2 & C.inside(lm2, 48), min_points=8)


def test_dot_hflip_with_perm(device):
    g, img, lm, vis = _setup(device)
    perm = (1, 0, 2, 4, 3)
    flags = G.sample_hflip(B, 0.5, g)
    flags[0], flags[1] = True, False
    out, lm2, vis2 = G.apply_hflip(img, lm, vis, flags, perm)
    # channel k still holds the dot of *old* landmark k; new landmark i is old perm[i] when flipped
    ident = torch.arange(K, device=device)
    chan = torch.where(flags[:, None].to(device), torch.tensor(perm, device=device), ident)
    out = out.gather(1, chan[:, :, None, None].expand_as(out))
    _check("hflip", out, lm2, vis2)


def test_dot_affine(device):
    g, img, lm, vis = _setup(device)
    out, lm2, vis2 = G.random_affine(img, lm, vis, g, degrees=30, scale=(0.7, 1.4), translate=(0.1, 0.1))
    _check("affine", out, lm2, vis2)


@pytest.mark.parametrize("preset,factor", [("paper", 4.0), ("eval", 1.5), ("dve", 1.0)])
def test_dot_tps(device, preset, factor):
    g, img, lm, vis = _setup(device, lo=0.2, hi=0.8)
    out, lm2, vis2 = T.random_tps(img, lm, vis, T.scaled(preset, factor), g)
    _check(f"tps-{preset}x{factor}", out, lm2, vis2)


def test_dot_tps_matches_kornia_image(device):
    from kornia.geometry.transform import warp_image_tps

    g, img, lm, vis = _setup(device)
    p = T.sample_tps(B, T.scaled("dve", 1.0), g)
    pf = p.to(device, img.dtype)
    ref = warp_image_tps(img, pf.centers, pf.kernel_weights, pf.affine, align_corners=True)
    assert (ref - T.warp_images(img, p)).abs().max().item() < 1e-4
    _check("tps-kornia-image", ref, T.warp_landmarks(p, lm, S, S), vis)


def test_dot_composed_chain(device):
    g, img, lm, vis = _setup(device, size=80)
    x, l2, v2 = T.random_tps(img, lm, vis, T.scaled("eval", 1.0), g)
    x, l2, v2 = G.random_resized_crop(x, l2, v2, 80, g, scale=(0.5, 1.0))
    x, l2, v2 = G.random_hflip(x, l2, v2, 0.5, None, g)
    x, l2, v2 = G.random_affine(x, l2, v2, g, degrees=15, scale=(0.9, 1.1))
    x, l2, v2 = G.center_crop(x, l2, v2, 64)
    assert x.shape[-1] == 64
    _check("chain", x, l2, v2 & C.inside(l2, 64), min_points=8)


def test_dot_view_recipe(device):
    """The full recipe with photometric steps neutralised: 3 dots in the 3 colour channels."""
    g = torch.Generator().manual_seed(3)
    lm = ((torch.rand(B, 3, 2, generator=g) * 0.3 + 0.35) * 135).to(device)
    img = (dot_images(lm, 136, 136, sigma=1.5) * 255).round().to(torch.uint8)
    vis = torch.ones(B, 3, dtype=torch.bool, device=device)
    cfg = R.face_moco(jpeg=False, jitter=(0.0, 0.0, 0.0), pca_std=0.0, mean=(0.0,) * 3, std=(1.0,) * 3,
                      tps="dve", hflip_p=0.5, flip_perm=(0, 1, 2), rrc_scale=(0.5, 1.0))
    view = R.make_view(img, lm, vis, cfg, g)
    assert view.images.shape == (B, 3, 96, 96)
    _check("recipe", view.images, view.landmarks, view.visible & C.inside(view.landmarks, 96), 6)


def test_dot_dve_pair(device):
    g, img, lm, vis = _setup(device, lo=0.25, hi=0.75)
    pair = T.dve_pair(img, g, landmarks=lm, visible=vis)
    _check("dve-pair view2 (A)", pair.view2, pair.landmarks2, pair.visible2)
    _check("dve-pair view1 (B)", pair.view1, pair.landmarks1, pair.visible1)
    # the grid maps view1 pixels to view2 pixels; at view1's landmarks it gives view2's landmarks
    at = T.map_points(pair.params2, pair.landmarks1.double(), S, S)
    well_inside = pair.visible1 & C.inside(pair.landmarks1, S, margin=-2)
    assert (at - pair.landmarks2).norm(dim=-1)[well_inside].max().item() < 1e-3
    dense = T.map_points(pair.params2, G.pixel_grid(S, S, device).reshape(-1, 2), S, S)
    assert torch.allclose(dense.reshape(B, S, S, 2), pair.grid, atol=1e-3)


def test_dot_matching_pair(device):
    g, img, lm, vis = _setup(device, lo=0.25, hi=0.75)
    pair = T.matching_pair(img, g, landmarks=lm, visible=vis)
    _check("matching-pair view2", pair.view2, pair.landmarks2, pair.visible2)
    _check("matching-pair view1", pair.view1, pair.landmarks1, pair.visible1)
    # view1 = TPS2(view2): resampling view2 with the dense map reproduces view1
    n = C.points_to_norm(pair.grid, S, align_corners=True)
    again = torch.nn.functional.grid_sample(pair.view2, n, align_corners=True)
    assert (again - pair.view1).abs().max().item() < 1e-4

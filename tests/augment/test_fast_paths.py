"""The fused / batched fast paths against slow, op-by-op references (equal up to float rounding)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from equinv import coords as C
from equinv.augment import geometric as G
from equinv.augment import photometric as P
from equinv.augment import recipes as R


def _faces(b=12, s=136, k=5, seed=0, device="cpu"):
    """Smooth uint8 images (JPEG-like content) with landmarks."""
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(b, 3, 9, 9, generator=g), size=s, mode="bicubic", align_corners=False)
    img = (img.clamp(0, 1) * 255).round().to(torch.uint8).to(device)
    lm = (torch.rand(b, k, 2, generator=g) * 0.6 + 0.2) * (s - 1)
    return img, lm.to(device), torch.ones(b, k, dtype=torch.bool, device=device)


def _chain(images, landmarks, visible, cfg, generator):
    """The view chain op by op on the full canvas (the pre-fusion ``make_view``): the slow reference."""
    b = images.shape[0]
    x, lm, vis = images, landmarks.float(), visible
    if cfg.jpeg:  # uint8 in: the codec sees the same bytes as the fused path
        x = P.apply_jpeg(x, P.sample_jpeg(b, cfg.canvas, generator))
    x = R.to_float(x)
    if cfg.rrc:
        boxes = G.sample_rrc(b, cfg.canvas, cfg.canvas, generator, cfg.rrc_scale, cfg.rrc_ratio)
        x, lm, vis = G.apply_rrc(x, lm, vis, boxes, cfg.canvas)
    if cfg.hflip_p > 0:
        x, lm, vis = G.random_hflip(x, lm, vis, cfg.hflip_p, cfg.flip_perm, generator)
    x = P.apply_jitter(x, P.sample_jitter(b, *cfg.jitter, generator=generator))
    if cfg.grayscale_p > 0:
        x = P.apply_grayscale(x, P.sample_grayscale(b, cfg.grayscale_p, generator))
    x = P.apply_pca_lighting(x, P.sample_pca_lighting(b, cfg.pca_std, generator))
    x = P.normalize(x, cfg.mean, cfg.std)
    return G.center_crop(x, lm, vis, cfg.final)


def test_view_equals_op_by_op_chain(device):
    img, lm, vis = _faces(device=device)
    opts = dict(hflip_p=0.5, flip_perm=(1, 0, 2, 4, 3), grayscale_p=0.3)
    for cfg in (R.face_moco(mean_stride=1, **opts), R.face_moco(jpeg=False, mean_stride=1),
                R.bird_moco(canvas=136, final=136, **opts)):
        ref = _chain(img, lm, vis, cfg, torch.Generator().manual_seed(5))
        got = R.make_view(img, lm, vis, cfg, torch.Generator().manual_seed(5))
        assert got.images.shape == ref[0].shape and got.images.is_contiguous()
        assert (got.images - ref[0]).abs().max().item() < 1e-3  # float rounding (normalised units)
        assert torch.allclose(got.landmarks, ref[1], atol=1e-4) and torch.equal(got.visible, ref[2])


def test_view_contrast_mean_from_margin_cells(device):
    """Default ``mean_stride=4``: only the contrast mean's margin part is estimated; a small deviation."""
    img, lm, vis = _faces(device=device)
    cfg = R.face_moco()
    ref = _chain(img, lm, vis, cfg, torch.Generator().manual_seed(1))
    got = R.make_view(img, lm, vis, cfg, torch.Generator().manual_seed(1))
    d = (got.images - ref[0]).abs()
    std = torch.tensor(cfg.std, device=d.device).reshape(1, 3, 1, 1)
    assert (d * std).max().item() < 0.5 / 255  # under half a grey level on the [0, 1] scale
    assert torch.allclose(got.landmarks, ref[1], atol=1e-4) and torch.equal(got.visible, ref[2])


def test_layout_cells_tile_the_canvas():
    for canvas, final, stride in ((136, 96, 4), (136, 96, 1), (135, 96, 4), (96, 96, 4), (50, 20, 3)):
        pts, w = R._layout(canvas, final, stride)
        assert w.sum().item() == canvas * canvas
        t = (canvas - final) // 2
        centre = G.pixel_grid(final, final).reshape(-1, 2) + t
        assert torch.equal(pts[: final * final], centre)
        if stride == 1:
            assert pts.shape[0] == canvas * canvas and (w == 1).all()
            assert torch.unique(pts[:, 1] * canvas + pts[:, 0]).numel() == canvas * canvas


def _bilinear64(img: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """``(C, H, W)`` → ``(C, h, w)``: bilinear, ``align_corners=False``, border-clamped, in float64."""
    def taps(n_in, n_out):
        src = ((torch.arange(n_out, dtype=torch.float64) + 0.5) * n_in / n_out - 0.5).clamp(0, n_in - 1)
        i0 = src.floor().long()
        return i0, (i0 + 1).clamp(max=n_in - 1), src - i0

    y0, y1, fy = taps(img.shape[1], h)
    x0, x1, fx = taps(img.shape[2], w)
    x = img.double()
    rows = x[:, y0] * (1 - fy)[:, None] + x[:, y1] * fy[:, None]
    return rows[:, :, x0] * (1 - fx) + rows[:, :, x1] * fx


def test_jpeg_resizes_equal_slow_reference(monkeypatch):
    """With the codec stubbed out, the batched runs = per-image float64 resize → round → resize back."""
    seen = []

    def stub(crops, quality):
        seen.extend(crops)
        return [c.clone() for c in crops]

    monkeypatch.setattr(P, "_codec", stub)
    img, _, _ = _faces(b=40, s=64)
    prm = P.sample_jpeg(40, 64, torch.Generator().manual_seed(2))
    assert len(set(prm.size.tolist())) > 5
    got = P.apply_jpeg(img, prm)
    order = torch.argsort(prm.size, stable=True).tolist()
    for k, i in enumerate(order):
        r = int(prm.size[i])
        exact = _bilinear64(img[i], r, r)
        coded = seen[k]
        assert coded.shape == (3, r, r) and coded.dtype == torch.uint8
        off = (coded.double() - exact.round()).abs()
        tie = ((exact - exact.floor()) - 0.5).abs() < 1e-4
        assert off.max() <= 1 and not (off.bool() & ~tie).any()  # only exact .5 ties may round the other way
        ref = _bilinear64(coded, 64, 64) / 255
        assert (got[i].double() - ref).abs().max().item() < 1e-5
    assert torch.allclose(P.apply_jpeg(img.float() / 255, prm), got, atol=1.5 / 255)


def test_warp_affine_equals_float64_grid(device):
    g = torch.Generator().manual_seed(0)
    img = torch.rand(4, 2, 40, 50, generator=g).to(device)
    m = G.sample_affine(4, 40, 50, g, degrees=25, scale=(0.7, 1.3), translate=(0.1, 0.1))
    out, _, _ = G.warp_affine(img, torch.zeros(4, 0, 2, device=device), torch.zeros(4, 0, dtype=torch.bool),
                              m, (30, 35))
    grid = G.pixel_grid(30, 35, dtype=torch.float64).reshape(1, -1, 2).expand(4, -1, -1)
    src = G.apply_affine_points(m.double(), grid)
    norm = C.points_to_norm(src, (40, 50))
    ref = F.grid_sample(img, norm.reshape(4, 30, 35, 2).float().to(device), align_corners=False)
    assert (out - ref).abs().max().item() < 1e-4
    pts = torch.tensor([[0.0, 0.0], [34.0, 29.0], [7.0, 11.0]])
    at = G.sample_points(img, m, pts)
    assert torch.allclose(at, out[:, :, pts[:, 1].long(), pts[:, 0].long()], atol=1e-5)

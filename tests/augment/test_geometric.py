import math

import torch

from equinv import coords as C
from equinv.augment import geometric as G


def test_flip_perm_swaps_indices(device):
    img = torch.zeros(2, 3, 8, 10, device=device)
    lm = torch.tensor([[[1.0, 2.0], [7.0, 3.0], [4.0, 5.0]]] * 2, device=device)
    vis = torch.tensor([[True, False, True]] * 2, device=device)
    out, lm2, vis2 = G.apply_hflip(img, lm, vis, torch.tensor([True, False]), (1, 0, 2))
    want = torch.tensor([[9 - 7.0, 3.0], [9 - 1.0, 2.0], [9 - 4.0, 5.0]], device=device)
    assert torch.allclose(lm2[0], want)
    assert vis2[0].tolist() == [False, True, True]
    assert torch.equal(lm2[1], lm[1]) and vis2[1].tolist() == [True, False, True]


def test_rrc_boxes_and_shapes():
    g = torch.Generator().manual_seed(0)
    boxes = G.sample_rrc(500, 136, 136, g)
    top, left, h, w = boxes.unbind(1)
    assert (top >= 0).all() and (left >= 0).all() and (top + h <= 136).all() and (left + w <= 136).all()
    area = (h * w).float() / 136**2
    assert area.min() > 0.19 and area.max() <= 1.0
    ratio = w.float() / h.float()
    assert ratio.min() > 0.7 and ratio.max() < 1.4
    # impossible scale → torchvision's centre fallback
    fb = G.sample_rrc(4, 50, 100, g, scale=(5.0, 6.0))
    assert fb.tolist() == [[0, 16, 50, 67]] * 4  # ratio clamped to 4/3, centred
    img = torch.rand(3, 3, 136, 136)
    out, lm, _ = G.random_resized_crop(img, torch.zeros(3, 0, 2), torch.zeros(3, 0, dtype=torch.bool), 96, g)
    assert out.shape == (3, 3, 96, 96) and lm.shape == (3, 0, 2)


def test_rrc_full_box_is_identity():
    img = torch.rand(2, 3, 20, 20)
    boxes = torch.tensor([[0, 0, 20, 20]] * 2)
    out, _, _ = G.apply_rrc(img, torch.zeros(2, 0, 2), torch.zeros(2, 0, dtype=torch.bool), boxes, 20)
    assert torch.allclose(out, img, atol=1e-5)


def test_reproducible():
    img = torch.rand(4, 3, 32, 32)
    lm = torch.rand(4, 2, 2) * 31
    vis = torch.ones(4, 2, dtype=torch.bool)
    a = G.random_affine(img, lm, vis, torch.Generator().manual_seed(5), 20, (0.8, 1.2), (0.1, 0.1))
    b = G.random_affine(img, lm, vis, torch.Generator().manual_seed(5), 20, (0.8, 1.2), (0.1, 0.1))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_affine_rotation_direction():
    m = G.sample_affine(1, 11, 11, torch.Generator().manual_seed(0), degrees=0)
    assert torch.allclose(m, torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64))
    assert math.isclose(C.pix_to_norm(torch.tensor(0.0), 10).item(), -0.9, rel_tol=1e-6)


def test_slice_resize_inside():
    img = torch.rand(1, 3, 136, 136)
    lm = torch.tensor([[[20.0, 20.0], [135.0, 0.0], [140.0, 5.0]]])
    vis = torch.ones(1, 3, dtype=torch.bool)
    out, lm2, _ = G.center_crop(img, lm, vis, 96)
    assert out.shape[-1] == 96 and torch.equal(out, img[..., 20:116, 20:116])
    assert lm2[0, 0].tolist() == [0.0, 0.0]
    assert C.inside(lm2, 96).tolist() == [[True, False, False]]
    r, lm3, _ = G.resize(img, lm, vis, 68)
    assert r.shape[-1] == 68 and torch.allclose(lm3[0, 0], torch.tensor([9.75, 9.75]))

import torch

from equinv.augment import recipes as R


def _batch(b=4, s=136, k=5, device="cpu"):
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(b, 3, s, s, generator=g) * 255).to(torch.uint8).to(device)
    lm = (torch.rand(b, k, 2, generator=g) * (s - 1)).to(device)
    return img, lm, torch.ones(b, k, dtype=torch.bool, device=device)


def test_face_moco_views(device):
    img, lm, vis = _batch(device=device)
    q, k = R.two_views(img, lm, vis, R.face_moco(), torch.Generator().manual_seed(0))
    assert q.images.shape == (4, 3, 96, 96) and q.images.dtype == torch.float32
    assert q.images.device.type == torch.device(device).type
    assert q.landmarks.shape == (4, 5, 2)
    assert not torch.equal(q.images, k.images)
    # normalised: roughly zero-mean, unit-ish spread
    assert q.images.mean().abs() < 1.0 and 0.3 < q.images.std() < 3


def test_bird_moco_and_options():
    img, lm, vis = _batch(s=96, k=15)
    cfg = R.bird_moco(tps="paper", hflip_p=0.5, flip_perm=tuple(range(15)), grayscale_p=0.5)
    v = R.make_view(img, lm, vis, cfg, torch.Generator().manual_seed(0))
    assert v.images.shape == (4, 3, 96, 96) and cfg.margin == 0
    assert R.face_moco(canvas=120, final=80).margin == 20


def test_reproducible_views():
    img, lm, vis = _batch()
    a = R.make_view(img, lm, vis, R.face_moco(), torch.Generator().manual_seed(7))
    b = R.make_view(img, lm, vis, R.face_moco(), torch.Generator().manual_seed(7))
    assert torch.equal(a.images, b.images) and torch.equal(a.landmarks, b.landmarks)


def test_no_landmarks_and_resize_to_canvas():
    img, _, _ = _batch(s=178)
    v = R.make_view(img, None, None, R.face_moco(), torch.Generator().manual_seed(0))
    assert v.images.shape == (4, 3, 96, 96) and v.landmarks.shape == (4, 0, 2)


def test_flip_perm_from_names():
    names = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
    assert R.flip_perm_from_names(names) == (1, 0, 2, 4, 3)

import torch

from equinv.augment import photometric as P


def _smooth(b=4, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.nn.functional.interpolate(torch.rand(b, 3, 6, 6, generator=g), size=s, mode="bilinear")


def test_jitter_range_shape_and_identity(device):
    x = _smooth().to(device)
    y = P.color_jitter(x, generator=torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1 and y.device == x.device
    one = torch.ones(4)
    same = P.apply_jitter(x, P.JitterParams(one, one, one, torch.tensor([[0, 1, 2]] * 4)))
    assert torch.allclose(same, x, atol=1e-6)
    gray = P.apply_jitter(x, P.JitterParams(one, one, 0 * one, torch.tensor([[2, 0, 1]] * 4)))
    assert (gray.max(1).values - gray.min(1).values).max() < 1e-5


def test_pca_lighting_constant_offset(device):
    x = _smooth().to(device)
    y = P.pca_lighting(x, generator=torch.Generator().manual_seed(0))
    d = y - x
    assert torch.allclose(d, d[:, :, :1, :1].expand_as(d), atol=1e-6)
    assert d.abs().max() > 0 and d.abs().max() < 0.2


def test_jpeg_noise(device):
    x = _smooth(s=96).to(device)
    p = P.sample_jpeg(4, 96, torch.Generator().manual_seed(0))
    assert (p.size >= 76).all() and (p.quality >= 30).all() and (p.quality <= 98).all()
    y = P.apply_jpeg(x, p)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert (y - x).abs().mean() > 1e-3
    assert (y.mean((1, 2, 3)) - x.mean((1, 2, 3))).abs().max() < 0.01


def test_jpeg_resample_is_identity_at_r_equals_w():
    x = _smooth(s=64)
    p = P.JpegParams(torch.full((4,), 64), torch.full((4,), 100))
    assert (P.apply_jpeg(x, p) - x).abs().mean() < 0.01


def test_grayscale_and_normalise_roundtrip(device):
    x = _smooth().to(device)
    flags = torch.tensor([True, False, True, False])
    y = P.apply_grayscale(x, flags)
    assert torch.equal(y[1], x[1]) and torch.allclose(y[0, 0], y[0, 2])
    for mean, std in ((P.FACE_MEAN, P.FACE_STD), (P.IMAGENET_MEAN, P.IMAGENET_STD)):
        assert torch.allclose(P.denormalize(P.normalize(x, mean, std), mean, std), x, atol=1e-6)


def test_libjpeg_matches_pil_and_degrades_with_quality():
    import io

    import numpy as np
    from PIL import Image

    x = _smooth(s=64)
    x8 = (x * 255).round() / 255
    errs = []
    for q in (95, 60, 30):
        p = P.JpegParams(torch.full((4,), 64), torch.full((4,), q))
        y = P.apply_jpeg(x8, p)
        buf = io.BytesIO()
        u8 = (x8[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        Image.fromarray(u8).save(buf, "JPEG", quality=q)
        pil = torch.from_numpy(np.array(Image.open(buf))).permute(2, 0, 1).float() / 255
        assert (y[0] - pil).abs().mean() < 0.01  # same codec family as the reference's PIL
        errs.append(float((y - x8).abs().mean()))
    assert errs[0] < errs[1] < errs[2]


def test_kornia_codec_option_runs():
    x = _smooth(s=32)
    p = P.JpegParams(torch.full((4,), 32), torch.full((4,), 50))
    y = P.apply_jpeg(x, p, codec="kornia")
    assert y.shape == x.shape and (y - x).abs().mean() < 0.05


def test_jitter_equals_torchvision_ops_in_sampled_order():
    import torchvision.transforms.v2.functional as TF

    x = _smooth()
    prm = P.sample_jitter(x.shape[0], generator=torch.Generator().manual_seed(3))
    y = P.apply_jitter(x, prm)
    ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation)
    for b in range(x.shape[0]):
        ref = x[b]
        f = (prm.brightness[b], prm.contrast[b], prm.saturation[b])
        for op in prm.order[b].tolist():
            ref = ops[op](ref, float(f[op]))
        assert torch.allclose(y[b], ref, atol=1e-4)  # float rounding of the luma only

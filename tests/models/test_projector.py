import pytest
import torch

from equinv.models.projector import Projector, default_softargmax_mul


def _maps(b=2):
    torch.manual_seed(0)
    return [torch.randn(b, 8, 3, 3), torch.randn(b, 4, 6, 6), torch.randn(b, 2, 12, 12)]


def test_softmax_projector_shapes_and_sums():
    p = Projector((8, 4, 2), dim=5)
    y = p(_maps(), 12)
    assert y.shape == (2, 5, 12, 12)
    assert torch.allclose(y.sum((-1, -2)), torch.ones(2, 5), atol=1e-5)
    assert (y >= 0).all()
    assert p.conv.conv.bias is not None


def test_softmax_equals_dense_reference():
    p = Projector((8, 4, 2), dim=5, softargmax_mul=7.0)
    maps = _maps()
    dense = torch.cat([torch.nn.functional.interpolate(m, size=(12, 12), mode="bilinear", align_corners=False)
                       for m in maps], 1)
    z = 7.0 * p.conv.dense(dense)
    ref = torch.softmax(z.flatten(2), -1).reshape_as(z)
    assert torch.allclose(p(maps, 12), ref, atol=1e-6)


def test_linear_projector_is_linear():
    p = Projector((8, 4, 2), dim=3, mode="paper")
    assert p.mode == "linear" and p.conv.conv.bias is None
    maps = _maps()
    y1 = p(maps, 6)
    y2 = p([2 * m for m in maps], 6)
    assert torch.allclose(2 * y1, y2, atol=1e-5)


def test_default_multiplier_by_dim():
    assert default_softargmax_mul(64) == 6.5
    assert default_softargmax_mul(128) == 7.0 and default_softargmax_mul(256) == 7.0
    assert Projector((4,), dim=64).softargmax_mul == 6.5
    assert Projector((4,), dim=128, softargmax_mul=3.0).softargmax_mul == 3.0
    with pytest.raises(ValueError):
        Projector((4,), mode="nope")

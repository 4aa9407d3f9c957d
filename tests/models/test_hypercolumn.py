"""Hypercolumns (protocol §2): dims, tap sizes, the factorised 1×1 conv, frozen trunks and weight loading."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from equinv.models.backbones import build_backbone, save_backbone
from equinv.models.hypercolumn import (
    DEEPEST_FIRST,
    FactorisedConv1x1,
    Hypercolumn,
    frozen_trunk,
    reference_taps,
)


def _meta_hypercolumn(arch: str, layer: int, size: int = 48) -> tuple[Hypercolumn, torch.Tensor]:
    with torch.device("meta"):
        hc = Hypercolumn(build_backbone(arch), reference_taps(layer), size=size)
        out = hc(torch.empty(2, 3, 96, 96))
    return hc, out


@pytest.mark.parametrize(
    "arch, layer, dim",
    [
        ("resnet18", 4, 960),
        ("resnet50", 4, 3840),
        ("resnet50_half", 4, 1920),
        ("resnet50", 5, 3904),
        ("resnet18", 5, 1024),
    ],
)
def test_hypercolumn_dims(arch, layer, dim):
    hc, out = _meta_hypercolumn(arch, layer)
    assert hc.dim == dim
    assert tuple(out.shape) == (2, dim, 48, 48)


@pytest.mark.parametrize(
    "arch, per_layer",
    [
        ("resnet18", (512, 256, 128, 64, 64)),
        ("resnet50", (2048, 1024, 512, 256, 64)),
        ("resnet50_half", (1024, 512, 256, 128, 64)),
    ],
)
def test_single_layers_and_order_deepest_first(arch, per_layer):
    assert reference_taps(5) == DEEPEST_FIRST == ("layer4", "layer3", "layer2", "layer1", "maxpool")
    for layer in range(1, 6):
        hc, out = _meta_hypercolumn(arch, layer)
        assert hc.taps == DEEPEST_FIRST[:layer]
        assert hc.channels == per_layer[:layer]  # x8 (conv5) first, then x7, x6, x5, x4
        assert out.shape[1] == sum(per_layer[:layer])
    for i, tap in enumerate(DEEPEST_FIRST):  # each tap on its own
        with torch.device("meta"):
            hc = Hypercolumn(build_backbone(arch), (tap,))
        assert hc.dim == per_layer[i]


def test_reference_taps_range():
    for bad in (0, 6):
        with pytest.raises(ValueError):
            reference_taps(bad)
    with pytest.raises(ValueError):
        Hypercolumn(build_backbone("resnet18"), ("conv9",))


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_tap_spatial_sizes_at_96(arch):
    with torch.device("meta"):
        hc = Hypercolumn(build_backbone(arch), reference_taps(5))
        maps = hc.maps(torch.empty(1, 3, 96, 96))
    # deepest first: layer4 3², layer3 6², layer2 12², layer1 24², maxpool 24²
    assert [tuple(m.shape[-2:]) for m in maps] == [(3, 3), (6, 6), (12, 12), (24, 24), (24, 24)]
    assert [m.shape[1] for m in maps] == list(hc.channels)


def test_hypercolumn_forward_is_upsampled_concat():
    torch.manual_seed(0)
    hc = Hypercolumn(frozen_trunk("resnet18", seed=1), reference_taps(5), size=20)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        maps, dense = hc.maps(x), hc(x)
        dense30 = hc(x, 30)
    ref = torch.cat([F.interpolate(m, size=(20, 20), mode="bilinear", align_corners=False) for m in maps], 1)
    torch.testing.assert_close(dense, ref)
    assert dense30.shape[-1] == 30


# ----------------------------------------------------------------------------- factorised 1×1 conv
def _random_maps(channels, sides, batch=2, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, c, s, s, generator=g, dtype=dtype) for c, s in zip(channels, sides, strict=True)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("size", [48, 24, 7])
def test_factorised_conv_equals_materialised(bias, size):
    # layer4, layer3, layer2, layer1, maxpool of a small net: sizes 3, 6, 12, 24, 24 (incl. two at 24²)
    channels, sides = (16, 12, 8, 6, 5), (3, 6, 12, 24, 24)
    torch.manual_seed(0)
    conv = FactorisedConv1x1(channels, 7, bias=bias).double()
    if bias:
        torch.nn.init.normal_(conv.conv.bias)
    maps = _random_maps(channels, sides)
    dense = torch.cat([F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) for m in maps], 1)
    a, b = conv(maps, size), conv.dense(dense)
    assert a.shape == b.shape == (2, 7, size, size)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", [True, False])
def test_factorised_conv_weight_gradients_agree(bias):
    channels, sides = (10, 8, 6, 4), (3, 6, 12, 24)
    torch.manual_seed(1)
    conv = FactorisedConv1x1(channels, 5, bias=bias).double()
    maps = _random_maps(channels, sides, seed=2)
    target = torch.randn(2, 5, 48, 48, dtype=torch.float64)
    dense = torch.cat([F.interpolate(m, size=(48, 48), mode="bilinear", align_corners=False) for m in maps], 1)

    def grads(out):
        conv.zero_grad()
        ((out - target) ** 2).sum().backward()
        return [p.grad.clone() for p in conv.parameters()]

    ga, gb = grads(conv(maps, 48)), grads(conv.dense(dense))
    assert len(ga) == (2 if bias else 1)
    for a, b in zip(ga, gb, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_factorised_conv_on_real_hypercolumn_with_maxpool_tap():
    hc = Hypercolumn(frozen_trunk("resnet18", seed=3), reference_taps(5), size=48).double()
    x = torch.randn(2, 3, 96, 96, dtype=torch.float64)
    conv = FactorisedConv1x1(hc.channels, 9).double()
    with torch.no_grad():
        maps = hc.maps(x)
        torch.testing.assert_close(conv(maps, 48), conv.dense(hc(x)), rtol=1e-10, atol=1e-10)


# ----------------------------------------------------------------------------- frozen trunks and weights
def test_frozen_trunk_random_init_is_deterministic_per_seed():
    a, b, c = frozen_trunk("resnet18", seed=5), frozen_trunk("resnet18", seed=5), frozen_trunk("resnet18", seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["conv1.weight"], sc["conv1.weight"])
    assert not a.training
    assert all(not p.requires_grad for p in a.parameters())
    # the global RNG is left alone
    torch.manual_seed(0)
    r0 = torch.rand(3)
    torch.manual_seed(0)
    frozen_trunk("resnet18", seed=9)
    assert torch.equal(torch.rand(3), r0)


def test_frozen_trunk_features_have_no_grad():
    hc = Hypercolumn(frozen_trunk("resnet18", seed=0), size=12)
    out = hc(torch.randn(1, 3, 64, 64))
    assert not out.requires_grad


def test_frozen_trunk_loads_run_dir_and_file(tmp_path):
    src = build_backbone("resnet18")
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.01)  # differ from any seeded init
        src.bn1.running_mean.fill_(0.25)
    run = tmp_path / "run"
    save_backbone(src, run / "backbone.safetensors")
    file = save_backbone(src, tmp_path / "w.safetensors")
    ref = src.state_dict()
    for weights in (run, str(run), file, str(file)):
        t = frozen_trunk("resnet18", weights)
        got = t.state_dict()
        assert all(torch.equal(got[k], ref[k]) for k in ref if not k.startswith("fc."))
        assert not t.training and all(not p.requires_grad for p in t.parameters())


def test_frozen_trunk_rejects_other_architecture(tmp_path):
    from equinv.errors import InputError

    file = save_backbone(build_backbone("resnet18"), tmp_path / "r18.safetensors")
    with pytest.raises(InputError, match="resnet18"):
        frozen_trunk("resnet50_half", file)

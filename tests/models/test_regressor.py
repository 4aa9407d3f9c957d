"""Landmark regressor (protocol §4): shapes, ranges, init, factorised == dense, and a tiny fit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from equinv.models.regressor import KeypointRegressor, regression_loss, soft_argmax

CHANNELS, SIDES = (32, 16, 8, 8), (3, 6, 12, 24)


def _maps(batch=3, dtype=torch.float32, seed=0, scale=0.1):
    g = torch.Generator().manual_seed(seed)
    return [scale * torch.randn(batch, c, s, s, generator=g, dtype=dtype) for c, s in zip(CHANNELS, SIDES, strict=True)]


def _dense(maps, size=48):
    return torch.cat([F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False) for m in maps], 1)


def test_shapes_and_init():
    torch.manual_seed(0)
    reg = KeypointRegressor(CHANNELS, n_landmarks=5)
    assert reg.heatmaps.weight.shape == (250, sum(CHANNELS), 1, 1)
    assert reg.heatmaps.conv.bias is None and reg.regressor.bias is None
    assert reg.regressor.weight.shape == (10, 100, 1, 1) and reg.regressor.groups == 5
    assert abs(reg.heatmaps.weight.std().item() - 1.0) < 0.02  # randn, std 1
    assert reg.regressor.weight.abs().max() <= 1 / math.sqrt(100)  # nn.Linear(100, 2) bound
    maps = _maps()
    out = reg(maps, 48)
    assert out.shape == (3, 5, 2)
    hm = reg.heatmaps(maps, 48)
    assert hm.shape == (3, 250, 48, 48)
    pts = reg.intermediate(hm)
    assert pts.shape == (3, 250, 2)
    assert pts.abs().max() <= 1 + 1e-6  # soft-argmax points lie in [-1, 1]
    # the output is a linear map of them: bounded by the L1 norm of each row of the grouped weights
    bound = reg.regressor.weight.abs().sum(dim=(1, 2, 3)).reshape(5, 2)
    assert (out.abs() <= bound + 1e-6).all()
    # no clamp (as the reference): the init can leave [-1, 1] slightly (max 1.02 here); with the grouped
    # weights an average of each landmark's own points, the output is a convex combination, so in [-1, 1]
    with torch.no_grad():
        w = torch.zeros_like(reg.regressor.weight)  # (10, 100, 1, 1): row 2k+c reads x/y of its 50 points
        w[0::2, 0::2] = 1 / 50
        w[1::2, 1::2] = 1 / 50
        reg.regressor.weight.copy_(w)
    avg = reg(maps, 48)
    assert avg.abs().max() <= 1 + 1e-6
    torch.testing.assert_close(avg, pts.reshape(3, 5, 50, 2).mean(2))


def test_single_tensor_input():
    reg = KeypointRegressor(12, n_landmarks=2, n_heatmaps=4)
    out = reg(torch.randn(2, 12, 8, 8), 8)
    assert out.shape == (2, 2, 2)


def test_soft_argmax_locates_peaks():
    maps = torch.zeros(1, 2, 5, 7)
    maps[0, 0, 0, 6] = 1.0  # top right: x = 1, y = -1
    maps[0, 1, 2, 3] = 1.0  # centre
    pts = soft_argmax(maps, mul=100.0)
    torch.testing.assert_close(pts, torch.tensor([[[1.0, -1.0], [0.0, 0.0]]]), atol=1e-6, rtol=0)
    flat = soft_argmax(torch.zeros(1, 1, 4, 4))  # uniform → the centre
    torch.testing.assert_close(flat, torch.zeros(1, 1, 2), atol=1e-6, rtol=0)


def test_grouping_each_landmark_reads_only_its_own_heatmaps():
    torch.manual_seed(0)
    reg = KeypointRegressor(CHANNELS, n_landmarks=3, n_heatmaps=4).double()
    hm = torch.randn(1, 12, 10, 10, dtype=torch.float64, requires_grad=True)
    out = reg._regress(hm)
    (g,) = torch.autograd.grad(out[0, 1].sum(), hm)
    touched = g.abs().sum(dim=(0, 2, 3)) > 0
    assert touched.tolist() == [False] * 4 + [True] * 4 + [False] * 4


def test_factorised_equals_dense():
    torch.manual_seed(0)
    reg = KeypointRegressor(CHANNELS, n_landmarks=5).double()
    maps = _maps(dtype=torch.float64)
    a, b = reg(maps, 48), reg.forward_dense(_dense(maps))
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    reg32 = KeypointRegressor(CHANNELS, n_landmarks=5)
    maps32 = _maps()
    torch.testing.assert_close(reg32(maps32, 48), reg32.forward_dense(_dense(maps32)), rtol=1e-3, atol=1e-4)


def test_factorised_and_dense_gradients_agree():
    torch.manual_seed(1)
    reg = KeypointRegressor(CHANNELS, n_landmarks=2, n_heatmaps=6).double()
    maps = _maps(dtype=torch.float64, seed=3)
    target = torch.rand(3, 2, 2, dtype=torch.float64) * 2 - 1

    def grads(pred):
        reg.zero_grad()
        regression_loss(pred, target).backward()
        return [p.grad.clone() for p in reg.parameters()]

    for a, b in zip(grads(reg(maps, 48)), grads(reg.forward_dense(_dense(maps))), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)


def test_loss_and_invisible_points():
    pred = torch.tensor([[[0.1, 0.2], [0.5, -0.5]]])
    gt = torch.tensor([[[0.1, 0.3], [0.0, 0.0]]])
    full = regression_loss(pred, gt)
    # 10·diff = (0, 1, 5, 5) → smooth-L1 (0, 0.5, 4.5, 4.5), mean 2.375
    assert full.item() == pytest.approx(2.375, abs=1e-5)
    vis = torch.tensor([[True, False]])
    # invisible point zeroed in both; the denominator still counts it: (0 + 0.5 + 0 + 0) / 4
    assert regression_loss(pred, gt, vis).item() == pytest.approx(0.125, abs=1e-6)


def test_tiny_fit_decreases_loss():
    torch.manual_seed(0)
    n, k = 16, 3
    maps = _maps(batch=n, seed=5, scale=0.05)
    # targets: a fixed random linear function of the features' global means, squashed into [-0.8, 0.8]
    pooled = torch.cat([m.mean(dim=(2, 3)) for m in maps], 1)
    target = 0.8 * torch.tanh(pooled @ torch.randn(pooled.shape[1], 2 * k) * 5).reshape(n, k, 2)
    reg = KeypointRegressor(CHANNELS, n_landmarks=k, n_heatmaps=10)
    opt = torch.optim.Adam(reg.parameters(), lr=1e-2, betas=(0.5, 0.999))
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = regression_loss(reg(maps, 24), target)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_heatmap_init_std_option():
    ref = KeypointRegressor((64, 32), 5, n_heatmaps=50)
    soft = KeypointRegressor((64, 32), 5, n_heatmaps=50, init_std=0.03)
    assert abs(ref.heatmaps.weight.std().item() - 1.0) < 0.05
    assert abs(soft.heatmaps.weight.std().item() - 0.03) < 0.002


def test_channel_scale_is_one_over_std_per_channel():
    from equinv.models.regressor import channel_scale

    g = torch.Generator().manual_seed(1)
    stds = torch.tensor([0.5, 2.0, 1e-3])
    batches = [[torch.randn(64, 3, 5, 5, generator=g) * stds.view(1, 3, 1, 1) + 7.0,
                torch.full((64, 2, 2, 2), 3.0)] for _ in range(3)]
    s = channel_scale(batches, (3, 2))
    assert s.shape == (5,)
    torch.testing.assert_close(s[:3], 1 / stds, rtol=0.05, atol=0)
    assert s[3:].tolist() == [1.0, 1.0]  # constant channels keep factor 1
    with pytest.raises(ValueError):
        channel_scale([], (3, 2))


def test_input_scale_makes_the_regressor_independent_of_the_feature_scale():
    from equinv.models.regressor import channel_scale

    maps = _maps(batch=8, scale=1.0)
    tiny = [m * 1e-4 for m in maps]
    outs = []
    for m in (maps, tiny):
        torch.manual_seed(0)
        reg = KeypointRegressor(CHANNELS, n_landmarks=3, softargmax_mul=3.0,
                                input_scale=channel_scale([m], CHANNELS))
        assert "input_scale" in reg.state_dict()
        outs.append((reg(m, 24), reg.forward_dense(_dense(m, 24))))
    torch.testing.assert_close(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outs[0][0], outs[0][1], rtol=1e-4, atol=1e-5)
    # without it the tiny features give (nearly) uniform heat-maps: every output is the same point
    torch.manual_seed(0)
    plain = KeypointRegressor(CHANNELS, n_landmarks=3, softargmax_mul=3.0)
    assert plain(tiny, 24).std(0).max() < 1e-3 < outs[1][0].std(0).max()
    with pytest.raises(ValueError, match="channels"):
        KeypointRegressor(CHANNELS, n_landmarks=3, input_scale=torch.ones(3))


def test_fan_in_init_gives_unit_logit_spread_whatever_the_feature_scale():
    from equinv.models.regressor import channel_std, fan_in_init_std, scale_from_std

    g = torch.Generator().manual_seed(3)
    stds = torch.linspace(0.1, 5.0, 64)
    maps = [torch.randn(4, 64, 24, 24, generator=g) * stds.view(1, -1, 1, 1) + 2.0]
    std = channel_std([maps], (64,))
    torch.testing.assert_close(std, stds, rtol=0.05, atol=0)
    sigma = fan_in_init_std(std)
    assert sigma == pytest.approx(1 / math.sqrt(float((std.double() ** 2).sum())))
    torch.manual_seed(0)
    for reg in (KeypointRegressor(64, 5, init_std=sigma),
                KeypointRegressor(64, 5, init_std=fan_in_init_std(std, scale_from_std(std)),
                                  input_scale=scale_from_std(std))):
        logits = reg.heatmaps(reg._scaled(maps), 24)
        spread = logits.flatten(2).std(-1).mean().item()  # std across locations, averaged over maps
        assert spread == pytest.approx(1.0, rel=0.1), spread
    # after the per-channel scaling every channel has unit std: 1/√C
    assert fan_in_init_std(std, scale_from_std(std)) == pytest.approx(1 / 8, rel=1e-4)
    # the reference std 1 on these features: logits ~ √Σvar ≈ 23 times wider
    assert 1 / sigma > 20
    with pytest.raises(ValueError, match="constant"):
        fan_in_init_std(torch.zeros(3))

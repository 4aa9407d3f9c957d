"""info_nce against a NumPy reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from equinv.losses.infonce import info_nce


def info_nce_numpy(q: np.ndarray, k: np.ndarray, queue: np.ndarray, t: float) -> tuple[float, np.ndarray]:
    q, k, queue = (a.astype(np.float64) for a in (q, k, queue))
    logits = np.concatenate([(q * k).sum(1, keepdims=True), q @ queue.T], axis=1) / t
    m = logits.max(1, keepdims=True)
    log_z = m[:, 0] + np.log(np.exp(logits - m).sum(1))
    return float(np.mean(log_z - logits[:, 0])), logits


def _unit(*shape: int) -> torch.Tensor:
    return F.normalize(torch.randn(*shape), dim=-1)


@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_matches_numpy(t):
    torch.manual_seed(0)
    q, k = _unit(8, 16), _unit(8, 16)
    queue = torch.rand(32, 16) * 2 - 1  # un-normalised, as the reference's initial queue
    loss, logits = info_nce(q, k, queue, t)
    ref_loss, ref_logits = info_nce_numpy(q.numpy(), k.numpy(), queue.numpy(), t)
    assert logits.shape == (8, 33) and logits.dtype == torch.float32
    np.testing.assert_allclose(logits.numpy(), ref_logits, rtol=1e-5, atol=1e-5)
    assert loss.item() == pytest.approx(ref_loss, rel=1e-5)


def test_aligned_keys_beat_random():
    torch.manual_seed(0)
    d = 16
    q = torch.eye(d)[:4]  # e_0..e_3
    queue = torch.eye(d)[4:]  # orthogonal to every query
    aligned, _ = info_nce(q, q.clone(), queue, 0.07)
    random, _ = info_nce(q, _unit(4, d), queue, 0.07)
    assert aligned.item() < random.item()
    assert aligned.item() < 1e-3  # exp(-1/0.07) * 12 negatives


def test_fp32_under_autocast_and_gradient():
    torch.manual_seed(0)
    q = _unit(4, 8).bfloat16().requires_grad_()
    k, queue = _unit(4, 8).bfloat16(), _unit(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss, logits = info_nce(q, k, queue, 0.07)
    assert loss.dtype == torch.float32 and logits.dtype == torch.float32
    loss.backward()
    assert q.grad is not None and torch.isfinite(q.grad).all()

"""MoCo v1: momentum update, queue, shuffle-BN emulation, one training step."""

from __future__ import annotations

import copy

import pytest
import torch

from equinv.models.backbones import Encoder
from equinv.models.moco import MoCo, grouped_forward, set_key_mode


@pytest.fixture
def moco() -> MoCo:
    torch.manual_seed(0)
    return MoCo(Encoder("resnet18", dim=16), queue_size=20, bn_groups=4).train()


def _images(b: int = 8, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def test_key_encoder_is_a_frozen_copy(moco):
    assert all(not p.requires_grad for p in moco.encoder_k.parameters())
    for pk, pq in zip(moco.encoder_k.parameters(), moco.encoder_q.parameters(), strict=True):
        assert torch.equal(pk, pq) and pk.data_ptr() != pq.data_ptr()


def test_momentum_update_parameters_only(moco):
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(torch.randn_like(p))
    moco.encoder_q(_images())  # changes the query net's BN running statistics
    k0 = [p.clone() for p in moco.encoder_k.parameters()]
    q0 = [p.clone() for p in moco.encoder_q.parameters()]
    buffers0 = {k: v.clone() for k, v in moco.encoder_k.named_buffers()}
    moco.momentum_update()
    for pk, k, q in zip(moco.encoder_k.parameters(), k0, q0, strict=True):
        torch.testing.assert_close(pk, 0.999 * k + 0.001 * q)
    for name, v in moco.encoder_k.named_buffers():
        assert torch.equal(v, buffers0[name])
    q_mean = dict(moco.encoder_q.named_buffers())["backbone.bn1.running_mean"]
    assert not torch.equal(dict(moco.encoder_k.named_buffers())["backbone.bn1.running_mean"], q_mean)


def test_forward_updates_key_encoder_in_training_only(moco):
    with torch.no_grad():
        for p in moco.encoder_q.parameters():
            p.add_(0.1)
    k0 = moco.encoder_k.head.fc.weight.clone()
    q0 = moco.encoder_q.head.fc.weight.clone()
    moco.eval()
    moco(_images(), _images(seed=2))
    assert torch.equal(moco.encoder_k.head.fc.weight, k0) and moco.queue_ptr.item() == 0
    moco.train()
    moco(_images(), _images(seed=2))
    torch.testing.assert_close(moco.encoder_k.head.fc.weight, 0.999 * k0 + 0.001 * q0)


def test_key_encoder_bn_stays_in_train_mode(moco):
    for mode in (True, False):
        moco.train(mode)
        bns = [m for m in moco.encoder_k.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns and all(m.training for m in bns)
        assert not moco.encoder_k.training
        assert moco.encoder_q.training == mode


def test_queue_init_enqueue_wraps_and_is_saved(moco):
    bound = 1 / (16 / 3) ** 0.5
    assert moco.queue.shape == (20, 16) and moco.queue.abs().max() <= bound
    assert not torch.allclose(moco.queue.norm(dim=1), torch.ones(20))  # not normalised
    batches = [torch.full((8, 16), float(i)) for i in range(3)]
    for b in batches:
        moco.enqueue(b)
    assert moco.queue_ptr.item() == 24 % 20
    assert torch.all(moco.queue[:4] == 2) and torch.all(moco.queue[4:8] == 0)
    assert torch.all(moco.queue[8:16] == 1) and torch.all(moco.queue[16:] == 2)

    state = moco.state_dict()
    assert "queue" in state and "queue_ptr" in state
    fresh = MoCo(Encoder("resnet18", dim=16), queue_size=20)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.queue, moco.queue) and fresh.queue_ptr.item() == 4


def test_forward_enqueues_keys(moco):
    moco(_images(), _images(seed=2))
    assert moco.queue_ptr.item() == 8
    torch.testing.assert_close(moco.queue[:8].norm(dim=1), torch.ones(8))


def test_one_group_no_shuffle_equals_plain_train_bn_forward(moco):
    moco.bn_groups = 1
    x = _images()
    ref_net = copy.deepcopy(moco.encoder_k)
    set_key_mode(ref_net)
    with torch.no_grad():
        ref = ref_net(x)
    keys, keys_all = moco.encode_keys(x, shuffle=False)
    torch.testing.assert_close(keys, ref)
    assert keys_all is keys


def test_groups_use_per_chunk_statistics_and_unshuffle(moco):
    x = _images()
    ref_net = copy.deepcopy(moco.encoder_k)
    with torch.no_grad():
        one_group = ref_net(x)
        torch.manual_seed(7)
        keys, _ = moco.encode_keys(x)  # shuffled, 4 groups
        torch.manual_seed(7)
        perm = torch.randperm(8)
        chunks = [ref_net(c) for c in x[perm].split(2)]  # each chunk normalised by its own statistics
        manual = torch.empty_like(one_group)
        manual[perm] = torch.cat(chunks)
    torch.testing.assert_close(keys, manual)
    assert not torch.allclose(keys, one_group, atol=1e-4)
    with torch.no_grad():  # same result from the helper with an explicit permutation
        torch.testing.assert_close(grouped_forward(ref_net, x, 4, perm), manual)


def test_uneven_groups_and_tiny_batches(moco):
    with torch.no_grad():
        out = grouped_forward(moco.encoder_k, _images(b=7), 3, torch.randperm(7))
        assert out.shape == (7, 16)
        assert grouped_forward(moco.encoder_k, _images(b=2), 4).shape == (2, 16)


def test_training_step_runs(moco):
    opt = torch.optim.SGD(moco.encoder_q.parameters(), lr=0.03, momentum=0.9, weight_decay=1e-4)
    loss, stats = moco(_images(), _images(seed=2))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    assert set(stats) == {"pos_sim", "neg_sim", "acc"} and 0 <= stats["acc"].item() <= 1
    loss.backward()
    assert all(p.grad is None for p in moco.encoder_k.parameters())
    assert moco.encoder_q.backbone.conv1.weight.grad is not None
    opt.step()


def test_queries_are_normalised_in_the_key_groups_as_the_reference_does():
    """The reference's DataParallel on 4 GPUs normalises each quarter of the queries separately (docs/parity.md)."""
    from equinv.models.moco import grouped_forward

    torch.manual_seed(0)
    x = torch.randn(8, 3, 32, 32)
    enc = Encoder("resnet18", dim=16)
    grouped = MoCo(copy.deepcopy(enc), queue_size=16, bn_groups=4)
    whole = MoCo(copy.deepcopy(enc), queue_size=16, bn_groups=4, query_bn="batch")
    captured = {}
    for name, m in (("grouped", grouped), ("whole", whole)):
        m.encoder_q.register_forward_hook(lambda mod, i, o, name=name: captured.setdefault(name, []).append(o))
        m(x, x.flip(-1))
    q_grouped, q_whole = torch.cat(captured["grouped"]), captured["whole"][0]
    with torch.no_grad():
        torch.testing.assert_close(q_grouped, grouped_forward(enc.train(), x, 4))
        torch.testing.assert_close(q_whole, enc(x))
    assert len(captured["grouped"]) == 4 and not torch.allclose(q_grouped, q_whole)

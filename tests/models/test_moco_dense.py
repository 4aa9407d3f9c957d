"""equinv's equivariance term beside InfoNCE (``MoCo(dense_dim=...)``, ``equinv pretrain --dense``)."""

from __future__ import annotations

import pytest
import torch

from equinv.losses.equivariance import cell_centres
from equinv.models.backbones import Encoder
from equinv.models.moco import MoCo, sample_points


def _moco(dense_dim: int = 0, **kw) -> MoCo:
    torch.manual_seed(0)
    return MoCo(Encoder("resnet18", dim=16), queue_size=20, bn_groups=2, dense_dim=dense_dim, **kw).train()


def _images(b: int = 4, size: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _points(b: int = 4, size: int = 32, n: int = 8) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The centres of an n × n grid over a size² view, the same in both views; all valid."""
    c = cell_centres(n, n, size / n).expand(b, -1, -1)
    return c, c.clone(), torch.ones(b, n * n, dtype=torch.bool)


def test_sample_points_reads_cells_at_their_centres():
    maps = torch.randn(2, 5, 6, 6)
    pts = cell_centres(6, 6, 4.0).expand(2, -1, -1)  # a 24² input, stride 4
    got = sample_points(maps, pts, (24, 24))
    torch.testing.assert_close(got, maps.flatten(2).transpose(1, 2))
    mid = sample_points(maps, torch.tensor([[[3.5, 1.5]]]).expand(2, -1, -1), (24, 24))  # between cells 0, 1
    torch.testing.assert_close(mid[:, 0], (maps[:, :, 0, 0] + maps[:, :, 0, 1]) / 2)


def test_without_dense_the_model_is_the_papers_and_with_it_the_trunk_is_the_same():
    plain, dense = _moco(), _moco(dense_dim=8)
    assert plain.dense_q is None and not any("dense" in k for k in plain.state_dict())
    ps, ds = plain.state_dict(), dense.state_dict()
    assert set(ps) < set(ds) and all(torch.equal(ps[k], ds[k]) for k in ps)  # same draws for trunk and queue
    assert all(not p.requires_grad for p in dense.dense_k.parameters())


def test_one_pass_gives_the_embedding_and_the_dense_map():
    m = _moco(dense_dim=8).eval()
    x = _images()
    z, d = m._dense_encoder(m.encoder_q, m.dense_q)(x)
    torch.testing.assert_close(z, m.encoder_q(x))
    assert d.shape == (4, 8, 8, 8)  # a quarter of the 32-px side


def test_dense_forward_adds_the_weighted_term_trains_the_head_and_moves_its_key_copy():
    m = _moco(dense_dim=8, dense_weight=0.5)
    head_k = m.dense_k.weight.clone()
    with torch.no_grad():
        m.dense_q.conv.weight.add_(0.1)
    head_q = m.dense_q.weight.clone()
    loss, stats = m(_images(), _images(seed=2), _points())
    torch.testing.assert_close(loss.detach(), stats["nce"] + 0.5 * stats["dense"])
    assert stats["dense"] > 0
    loss.backward()
    assert m.dense_q.weight.grad.abs().sum() > 0 and m.encoder_q.backbone.layer1[0].conv1.weight.grad.abs().sum() > 0
    torch.testing.assert_close(m.dense_k.weight, 0.999 * head_k + 0.001 * head_q)
    # without points (or without a dense head) the forward is plain MoCo
    _, plain_stats = m(_images(), _images(seed=2))
    assert "dense" not in plain_stats


def _stats(m: MoCo, x: torch.Tensor, points) -> dict:
    torch.manual_seed(3)  # the key batch's shuffle-BN permutation
    return m(x, x, points)[1]


def test_the_term_is_lower_for_true_correspondences():
    """Identical views: a descriptor scored against its own location costs less than against shuffled ones."""
    m = _moco(dense_dim=8, dense_temperature=20.0).eval()
    x = _images()
    in_q, in_k, valid = _points()
    right = _stats(m, x, (in_q, in_k, valid))
    wrong = _stats(m, x, (in_q, in_k[:, torch.randperm(64, generator=torch.Generator().manual_seed(0))], valid))
    assert right["dense"] < wrong["dense"]


def test_invalid_points_do_not_count():
    m = _moco(dense_dim=8).eval()
    x = _images()
    in_q, in_k, valid = _points()
    far = in_k.clone()
    far[:, :10] = 1e3  # targets far outside the view
    mask = valid.clone()
    mask[:, :10] = False
    masked = _stats(m, x, (in_q, far, mask))
    rest = _stats(m, x, (in_q[:, 10:], in_k[:, 10:], valid[:, 10:]))
    counted = _stats(m, x, (in_q, far, valid))
    torch.testing.assert_close(masked["dense"], rest["dense"])
    assert counted["dense"] > masked["dense"] + 1


def test_bad_dense_dim_is_refused():
    with pytest.raises(ValueError, match="dense_dim"):
        _moco(dense_dim=-1)


def test_through_auxiliary_rebuilds_from_the_other_map():
    from equinv.losses.equivariance import through_auxiliary

    aux = torch.randn(2, 6, 3, 3)
    cells = torch.nn.functional.normalize(aux.flatten(2).transpose(1, 2), dim=-1)  # (2, 9, 6) unit cells
    # a descriptor equal to a cell of the auxiliary map, at a sharp multiplier, comes back as that cell
    got = through_auxiliary(cells[:, [4, 7]] * 3.0, aux, temperature=1e3)
    torch.testing.assert_close(got, cells[:, [4, 7]])
    # at multiplier 0 it is the mean cell, whatever the descriptor
    flat = through_auxiliary(torch.randn(2, 5, 6), aux, temperature=0.0)
    torch.testing.assert_close(flat, cells.mean(1, keepdim=True).expand(-1, 5, -1))
    # the auxiliary map is trained through it (DVE lets the gradient reach both images)
    aux.requires_grad_(True)
    through_auxiliary(torch.randn(2, 5, 6), aux, temperature=5.0).sum().backward()
    assert aux.grad.abs().sum() > 0


def test_dense_aux_scores_descriptors_rebuilt_from_the_next_image():
    """With --dense-aux the term changes (InfoNCE does not) and is Eq. 3 on descriptors rebuilt from the next image."""
    from equinv.losses.equivariance import point_equivariance_loss, through_auxiliary

    plain, aux = _moco(dense_dim=8, dense_temperature=20.0), _moco(dense_dim=8, dense_temperature=20.0,
                                                                   dense_aux=True)
    aux.load_state_dict(plain.state_dict())
    x, pts = _images(), _points()
    sp, sa = _stats(plain.eval(), x, pts), _stats(aux.eval(), x, pts)
    assert not torch.allclose(sp["dense"], sa["dense"]) and torch.allclose(sp["nce"], sa["nce"])
    # the term is Eq. 3 on descriptors rebuilt from the query map of image (b + 1) mod B
    m = aux.eval()
    _, map_q = m._dense_encoder(m.encoder_q, m.dense_q)(x)
    torch.manual_seed(3)
    (_, map_k), _ = m._keys(x, shuffle=True, dense=True)
    a = through_auxiliary(sample_points(map_q, pts[0], (32, 32)), map_q.roll(-1, dims=0), 20.0)
    want = point_equivariance_loss(a, map_k, pts[1], 32 / map_k.shape[-1], pts[2], 20.0, 0.5)
    torch.testing.assert_close(sa["dense"], want)

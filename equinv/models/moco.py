"""MoCo v1 as in the paper's reference code (protocol §1; CL/train_moco.py, CL/NCE/NCEAverage.py).

- Query encoder ``encoder_q`` (trained) and key encoder ``encoder_k`` (a deep copy, no gradient).
- Momentum update of **parameters only**: ``θk ← m·θk + (1−m)·θq``, m = 0.999; the key encoder's BN
  running statistics are its own and are never copied from the query encoder.
- The key encoder runs with BN in train mode (batch statistics) at all times; everything else in it is
  in eval mode (CL/train_moco.py:280-286).
- Shuffle-BN: the key batch is permuted, encoded in ``bn_groups`` separate BN groups, and un-permuted.
  In one process the groups are chunks of the local batch (the reference's 4 GPUs → ``bn_groups=4``);
  across ranks the images of all ranks are gathered, shuffled with one permutation broadcast from
  rank 0, each rank encodes its shard (in ``max(1, bn_groups // world_size)`` groups), and the keys are
  gathered and un-shuffled (MoCo's ``_batch_shuffle_ddp``/``_batch_unshuffle_ddp``).
- Queue ``(K, dim)`` initialised U(±1/sqrt(dim/3)) and not normalised; FIFO enqueue of the keys of all
  ranks with a pointer that wraps around (K need not be a multiple of the batch). Queue and pointer are
  buffers, so they are saved in ``state_dict`` and a resumed run keeps its negatives.
- InfoNCE at T = 0.07, logits in float32 (:func:`equinv.losses.info_nce`).

equinv's option (not in the paper; ``dense_dim > 0``, ``equinv pretrain --dense W``): an **equivariance term
beside InfoNCE**. A 1×1 head over the conv2..conv5 hypercolumn (:class:`FactorisedConv1x1`, the shape of
the paper's equivariant projector) gives dense descriptors of each view; its key copy follows by momentum
like the key encoder. Points tracked through both views (``points``: where each lies in the query view and
in the key view) are described from the query map and scored with the paper's Eq. 3 against every cell
of the key map (:func:`~equinv.losses.equivariance.point_equivariance_loss`): a descriptor must pick
out its own location in the other view. The loss becomes ``InfoNCE + dense_weight · L_eq``.
With ``dense_aux`` each point's descriptor is first rebuilt from the query map of *another* image of the
batch (the next one: a soft match, as DVE's auxiliary image, :mod:`equinv.losses.dve`) before it is scored,
so the term also asks descriptors to agree across instances.

The momentum update and the enqueue happen only in training mode; ``model.eval()`` gives a loss
without changing the key encoder or the queue.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from equinv import coords as C
from equinv import distributed as D
from equinv.losses.equivariance import point_equivariance_loss, through_auxiliary
from equinv.losses.infonce import info_nce
from equinv.models.backbones import Encoder
from equinv.models.hypercolumn import FactorisedConv1x1
from equinv.models.transfer_head import sample_at

#: What a forward pass of an encoder gives: global embeddings, or (embeddings, dense descriptor maps).
Encoded = Tensor | tuple[Tensor, Tensor]


def grouped_forward(encoder, x: Tensor, groups: int, perm: Tensor | None = None) -> Encoded:
    """Encode ``x`` (B, ...) in ``groups`` separate forward passes (separate BN batch statistics).

    With ``perm`` (a permutation of ``range(B)``) the batch is first shuffled as ``x[perm]`` and the
    outputs are returned un-shuffled, i.e. row ``i`` of the result is always the encoding of ``x[i]``.
    Groups are ``torch.tensor_split`` chunks (sizes differ by at most one) of at least two samples
    each (a one-sample BN group is degenerate and fails on 1x1 maps), so at most ``B // 2`` groups.
    ``encoder`` may return a tensor or a tuple of tensors (batch first); a tuple comes back as one.
    """
    if perm is not None:
        x = x[perm]
    chunks = torch.tensor_split(x, max(1, min(groups, x.shape[0] // 2)))
    outs = [encoder(c) for c in chunks]
    parts = list(zip(*outs, strict=True)) if isinstance(outs[0], tuple) else [outs]
    inverse = None if perm is None else torch.argsort(perm)
    merged = tuple(torch.cat(p, dim=0) if inverse is None else torch.cat(p, dim=0)[inverse] for p in parts)
    return merged if isinstance(outs[0], tuple) else merged[0]


def sample_points(maps: Tensor, points: Tensor, input_size: tuple[int, int]) -> Tensor:
    """``(B, N, C)`` bilinear samples of ``maps`` ``(B, C, h, w)``, which cover an input of ``input_size``
    ``(H, W)`` pixels, at ``points`` ``(B, N, 2)`` (x, y) in that input's pixels (``align_corners=False``:
    the maps' cell centres sit where :func:`~equinv.losses.equivariance.cell_centres` puts them)."""
    hin, win = input_size
    return sample_at(maps, torch.stack((C.pix_to_norm(points[..., 0], win), C.pix_to_norm(points[..., 1], hin)), -1))


def set_key_mode(encoder: nn.Module) -> None:
    """Eval mode for everything in ``encoder`` except its BatchNorm layers, which use batch statistics."""
    encoder.eval()
    for m in encoder.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()


class MoCo(nn.Module):
    """MoCo v1 with shuffle-BN. ``forward(im_q, im_k) -> (loss, stats)``.

    Args:
        encoder: an :class:`Encoder`, or an architecture name to build one with ``dim`` and ``head``.
        queue_size: K, the number of negatives (4096 in the paper).
        momentum: m of the key-encoder update (0.999).
        temperature: T of InfoNCE (0.07).
        bn_groups: BN groups of the key batch in total (4 mimics the reference's 4 GPUs; 1 disables).
        query_bn: ``groups``: the query batch is normalised in the same ``bn_groups`` contiguous groups (the
            reference: DataParallel on 4 GPUs normalises each GPU's quarter of the queries separately);
            ``batch``: over the whole batch (equinv ≤ 0.1; docs/parity.md §5).
        dense_dim, dense_weight, dense_temperature, dense_power, dense_aux: equinv's equivariance term (module
            docstring): the dense head's channels (0: off, the paper's MoCo), the term's weight, Eq. 3's logit
            multiplier and distance exponent, and whether descriptors are first rebuilt from another image.

    ``stats`` holds detached 0-d tensors: ``pos_sim`` (mean q·k), ``neg_sim`` (mean q·queue),
    ``acc`` (fraction of queries whose positive has the largest logit).

    Example::

        moco = MoCo("resnet50")
        loss, stats = moco(view1, view2)   # (B, 3, 96, 96) each
        loss.backward(); optimizer.step()
    """

    def __init__(
        self,
        encoder: Encoder | str = "resnet50",
        *,
        dim: int = 128,
        head: str = "linear",
        queue_size: int = 4096,
        momentum: float = 0.999,
        temperature: float = 0.07,
        bn_groups: int = 4,
        query_bn: str = "groups",
        dense_dim: int = 0,
        dense_weight: float = 1.0,
        dense_temperature: float = 7.0,
        dense_power: float = 0.5,
        dense_aux: bool = False,
    ):
        super().__init__()
        if query_bn not in ("groups", "batch"):
            raise ValueError(f"query_bn must be groups or batch, got {query_bn!r}")
        self.query_bn = query_bn
        if isinstance(encoder, str):
            encoder = Encoder(encoder, dim=dim, head=head)
        if queue_size < 1 or bn_groups < 1 or dense_dim < 0:
            raise ValueError(f"queue_size, bn_groups must be >= 1 and dense_dim >= 0, got {queue_size}, "
                             f"{bn_groups}, {dense_dim}")
        self.momentum, self.temperature, self.bn_groups = momentum, temperature, bn_groups
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = encoder.dim
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("queue", torch.rand(queue_size, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        # The dense heads are made last, so the trunk and the queue draw the same numbers with or without them.
        self.dense_q: FactorisedConv1x1 | None = None
        self.dense_k: FactorisedConv1x1 | None = None
        self.dense_weight, self.dense_temperature, self.dense_power = dense_weight, dense_temperature, dense_power
        self.dense_aux = dense_aux
        if dense_dim:
            self.dense_q = FactorisedConv1x1(encoder.trunk_channels[1:], dense_dim)
            self.dense_k = copy.deepcopy(self.dense_q)
            for p in self.dense_k.parameters():
                p.requires_grad_(False)
        set_key_mode(self.encoder_k)

    def train(self, mode: bool = True) -> MoCo:
        super().train(mode)
        set_key_mode(self.encoder_k)
        return self

    def _pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        pairs: list[tuple[nn.Module, nn.Module]] = [(self.encoder_q, self.encoder_k)]
        if self.dense_q is not None and self.dense_k is not None:
            pairs.append((self.dense_q, self.dense_k))
        return pairs

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θk ← m·θk + (1−m)·θq`` for parameters only (buffers such as BN statistics are not touched)."""
        for q_net, k_net in self._pairs():
            for pk, pq in zip(k_net.parameters(), q_net.parameters(), strict=True):
                pk.mul_(self.momentum).add_(pq.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (N, dim) into the queue at the pointer, wrapping around; advance the pointer."""
        size = self.queue.shape[0]
        keys = keys.detach()[-size:].to(self.queue.dtype)
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue.index_copy_(0, idx, keys)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    @staticmethod
    def _dense_encoder(encoder: Encoder, head: nn.Module):
        """``x ↦ (embedding, dense map)`` from one trunk pass: the embedding equals ``encoder(x)``, the map is
        ``head`` over the conv2..conv5 taps at the conv2 resolution (a quarter of the input side)."""

        def run(x: Tensor) -> tuple[Tensor, Tensor]:
            z, taps = encoder.forward_with_taps(x)
            return z, head(taps[1:], taps[1].shape[-1])

        return run

    @torch.no_grad()
    def _keys(self, im_k: Tensor, shuffle: bool, dense: bool) -> tuple[Encoded, Encoded]:
        """The key encoder's output for ``im_k`` with shuffle-BN: ``(this rank's, all ranks')``."""
        enc = self._dense_encoder(self.encoder_k, self.dense_k) if dense else self.encoder_k
        ws = D.world_size()
        if ws == 1:
            perm = (
                torch.randperm(im_k.shape[0], device=im_k.device) if shuffle and self.bn_groups > 1 else None
            )
            k = grouped_forward(enc, im_k, self.bn_groups, perm)
            return k, k
        x_all = D.all_gather(im_k)
        perm = (
            torch.randperm(x_all.shape[0], device=x_all.device)
            if shuffle
            else torch.arange(x_all.shape[0], device=x_all.device)
        )
        D.broadcast_(perm, src=0)
        shard = x_all[perm.view(ws, -1)[D.rank()]]
        out = grouped_forward(enc, shard, max(1, self.bn_groups // ws))
        inverse = torch.argsort(perm)
        parts = [D.all_gather(t)[inverse] for t in (out if isinstance(out, tuple) else (out,))]
        mine = [t.view(ws, -1, *t.shape[1:])[D.rank()] for t in parts]
        return (tuple(mine), tuple(parts)) if isinstance(out, tuple) else (mine[0], parts[0])

    @torch.no_grad()
    def encode_keys(self, im_k: Tensor, shuffle: bool = True) -> tuple[Tensor, Tensor]:
        """Keys of ``im_k`` (B, 3, H, W) with shuffle-BN: ``(this rank's keys (B, dim), all ranks' keys)``."""
        return self._keys(im_k, shuffle, dense=False)  # type: ignore[return-value]

    def forward(self, im_q: Tensor, im_k: Tensor,
                points: tuple[Tensor, Tensor, Tensor] | None = None) -> tuple[Tensor, dict[str, Tensor]]:
        """``im_q``, ``im_k``: two views ``(B, 3, H, W)`` of the same images. Returns ``(loss, stats)``.

        ``points`` (with ``dense_dim > 0``): ``(in_q, in_k, valid)``, the same ``N`` points per image in the
        query view's and the key view's pixels ``(B, N, 2)`` and which of them count ``(B, N)`` (seen in
        both); it adds the equivariance term, and ``stats`` gains ``nce`` and ``dense`` (the two losses).
        """
        dense = self.dense_q is not None and points is not None
        enc_q = self._dense_encoder(self.encoder_q, self.dense_q) if dense else self.encoder_q
        if self.query_bn == "groups":  # this rank's share of the groups, as the keys' (no shuffle)
            out_q = grouped_forward(enc_q, im_q, max(1, self.bn_groups // D.world_size()))
        else:
            out_q = enc_q(im_q)
        if self.training:
            self.momentum_update()
        out_k, out_k_all = self._keys(im_k, shuffle=True, dense=dense)
        if dense:  # (embeddings, dense maps) pairs; only the embeddings enter the queue
            (q, map_q), (k, map_k), k_all = out_q, out_k, out_k_all[0]
        else:
            q, k, k_all = out_q, out_k, out_k_all
        loss, logits = info_nce(q, k, self.queue.clone(), self.temperature)
        if self.training:
            self.enqueue(k_all)
        with torch.no_grad():
            stats = {
                "pos_sim": logits[:, 0].mean() * self.temperature,
                "neg_sim": logits[:, 1:].mean() * self.temperature,
                "acc": (logits.argmax(dim=1) == 0).float().mean(),
            }
        if dense:
            in_q, in_k, valid = points
            with torch.autocast(device_type=im_q.device.type, enabled=False):
                a = sample_points(map_q.float(), in_q, tuple(im_q.shape[-2:]))
                if self.dense_aux:
                    a = through_auxiliary(a, map_q.float().roll(-1, dims=0), self.dense_temperature)
                stride = im_k.shape[-1] / map_k.shape[-1]
                l_eq = point_equivariance_loss(a, map_k.float(), in_k, stride, valid, self.dense_temperature,
                                               self.dense_power)
            stats["nce"], stats["dense"] = loss.detach(), l_eq.detach()
            loss = loss + self.dense_weight * l_eq
        return loss, stats

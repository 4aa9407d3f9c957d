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

The momentum update and the enqueue happen only in training mode; ``model.eval()`` gives a loss
without changing the key encoder or the queue.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import Tensor, nn

from equinv import distributed as D
from equinv.losses.infonce import info_nce
from equinv.models.backbones import Encoder


def grouped_forward(encoder: nn.Module, x: Tensor, groups: int, perm: Tensor | None = None) -> Tensor:
    """Encode ``x`` (B, ...) in ``groups`` separate forward passes (separate BN batch statistics).

    With ``perm`` (a permutation of ``range(B)``) the batch is first shuffled as ``x[perm]`` and the
    outputs are returned un-shuffled, i.e. row ``i`` of the result is always the encoding of ``x[i]``.
    Groups are ``torch.tensor_split`` chunks (sizes differ by at most one) of at least two samples
    each (a one-sample BN group is degenerate and fails on 1x1 maps), so at most ``B // 2`` groups.
    """
    if perm is not None:
        x = x[perm]
    chunks = torch.tensor_split(x, max(1, min(groups, x.shape[0] // 2)))
    out = torch.cat([encoder(c) for c in chunks], dim=0)
    if perm is not None:
        out = out[torch.argsort(perm)]
    return out


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
    ):
        super().__init__()
        if query_bn not in ("groups", "batch"):
            raise ValueError(f"query_bn must be groups or batch, got {query_bn!r}")
        self.query_bn = query_bn
        if isinstance(encoder, str):
            encoder = Encoder(encoder, dim=dim, head=head)
        if queue_size < 1 or bn_groups < 1:
            raise ValueError(f"queue_size and bn_groups must be >= 1, got {queue_size}, {bn_groups}")
        self.momentum, self.temperature, self.bn_groups = momentum, temperature, bn_groups
        self.encoder_q = encoder
        self.encoder_k = copy.deepcopy(encoder)
        for p in self.encoder_k.parameters():
            p.requires_grad_(False)
        dim = encoder.dim
        stdv = 1.0 / math.sqrt(dim / 3)
        self.register_buffer("queue", torch.rand(queue_size, dim).mul_(2 * stdv).sub_(stdv))
        self.register_buffer("queue_ptr", torch.zeros((), dtype=torch.long))
        set_key_mode(self.encoder_k)

    def train(self, mode: bool = True) -> MoCo:
        super().train(mode)
        set_key_mode(self.encoder_k)
        return self

    @torch.no_grad()
    def momentum_update(self) -> None:
        """``θk ← m·θk + (1−m)·θq`` for parameters only (buffers such as BN statistics are not touched)."""
        for pk, pq in zip(self.encoder_k.parameters(), self.encoder_q.parameters(), strict=True):
            pk.mul_(self.momentum).add_(pq.detach(), alpha=1.0 - self.momentum)

    @torch.no_grad()
    def enqueue(self, keys: Tensor) -> None:
        """Write ``keys`` (N, dim) into the queue at the pointer, wrapping around; advance the pointer."""
        size = self.queue.shape[0]
        keys = keys.detach()[-size:].to(self.queue.dtype)
        idx = (self.queue_ptr + torch.arange(keys.shape[0], device=self.queue.device)) % size
        self.queue.index_copy_(0, idx, keys)
        self.queue_ptr.copy_((self.queue_ptr + keys.shape[0]) % size)

    @torch.no_grad()
    def encode_keys(self, im_k: Tensor, shuffle: bool = True) -> tuple[Tensor, Tensor]:
        """Keys of ``im_k`` (B, 3, H, W) with shuffle-BN: ``(this rank's keys (B, dim), all ranks' keys)``."""
        ws = D.world_size()
        if ws == 1:
            perm = (
                torch.randperm(im_k.shape[0], device=im_k.device) if shuffle and self.bn_groups > 1 else None
            )
            k = grouped_forward(self.encoder_k, im_k, self.bn_groups, perm)
            return k, k
        x_all = D.all_gather(im_k)
        perm = (
            torch.randperm(x_all.shape[0], device=x_all.device)
            if shuffle
            else torch.arange(x_all.shape[0], device=x_all.device)
        )
        D.broadcast_(perm, src=0)
        shard = x_all[perm.view(ws, -1)[D.rank()]]
        k_shuffled = D.all_gather(grouped_forward(self.encoder_k, shard, max(1, self.bn_groups // ws)))
        k_all = k_shuffled[torch.argsort(perm)]
        return k_all.view(ws, -1, k_all.shape[1])[D.rank()], k_all

    def forward(self, im_q: Tensor, im_k: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """``im_q``, ``im_k``: two views ``(B, 3, H, W)`` of the same images. Returns ``(loss, stats)``."""
        if self.query_bn == "groups":  # this rank's share of the groups, as the keys' (no shuffle)
            q = grouped_forward(self.encoder_q, im_q, max(1, self.bn_groups // D.world_size()))
        else:
            q = self.encoder_q(im_q)
        if self.training:
            self.momentum_update()
        k, k_all = self.encode_keys(im_k)
        loss, logits = info_nce(q, k, self.queue.clone(), self.temperature)
        if self.training:
            self.enqueue(k_all)
        with torch.no_grad():
            stats = {
                "pos_sim": logits[:, 0].mean() * self.temperature,
                "neg_sim": logits[:, 1:].mean() * self.temperature,
                "acc": (logits.argmax(dim=1) == 0).float().mean(),
            }
        return loss, stats

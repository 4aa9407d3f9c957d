"""Two gloo processes give the same keys, losses and queue as one process with the same BN groups."""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from equinv.models.backbones import Encoder
from equinv.models.moco import MoCo


def _build(dense_dim: int = 0) -> MoCo:
    torch.manual_seed(0)
    moco = MoCo(Encoder("resnet18", dim=16), queue_size=20, bn_groups=2, dense_dim=dense_dim).train()
    moco.encoder_q.eval()  # query BN statistics would differ between 1x8 and 2x4 samples
    return moco


def _images() -> torch.Tensor:
    return torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _worker(rank: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        moco = _build()
        x = _images()[4 * rank : 4 * rank + 4]
        torch.manual_seed(123 + rank)  # rank 1's own permutation must be overridden by rank 0's
        if rank == 0:
            torch.manual_seed(5)
        with torch.no_grad():
            keys, keys_all = moco.encode_keys(x)
        moco = _build()
        torch.manual_seed(5 if rank == 0 else 7)
        loss, _ = moco(x.flip(0), x)
        torch.manual_seed(123 + rank)
        if rank == 0:
            torch.manual_seed(5)
        (_, dense), (_, dense_all) = _build(dense_dim=8)._keys(x, shuffle=True, dense=True)
        result = {"keys": keys, "keys_all": keys_all, "loss": loss.detach(), "queue": moco.queue, "dense": dense,
                  "dense_all": dense_all}
        torch.save(result | {"ptr": moco.queue_ptr}, f"{out}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_two_processes_match_one(tmp_path):
    mp.spawn(_worker, args=(f"file://{tmp_path}/store", str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))

    moco = _build()
    torch.manual_seed(5)
    with torch.no_grad():
        keys, _ = moco.encode_keys(_images())  # same permutation of 8, 2 groups of 4
    torch.testing.assert_close(r0["keys_all"], keys)
    torch.testing.assert_close(r1["keys_all"], keys)
    torch.testing.assert_close(torch.cat([r0["keys"], r1["keys"]]), keys)

    moco = _build()
    x = _images()
    torch.manual_seed(5)
    loss, _ = moco(torch.cat([x[:4].flip(0), x[4:].flip(0)]), x)
    torch.testing.assert_close((r0["loss"] + r1["loss"]) / 2, loss)  # DDP averages the gradients
    for r in (r0, r1):  # every rank enqueues the keys of all ranks, in the same order
        torch.testing.assert_close(r["queue"], moco.queue)
        assert r["ptr"].item() == moco.queue_ptr.item() == 8

    torch.manual_seed(5)  # the dense key maps (equinv pretrain --dense) travel the same way as the keys
    (_, dense), _ = _build(dense_dim=8)._keys(_images(), shuffle=True, dense=True)
    torch.testing.assert_close(r0["dense_all"], dense)
    torch.testing.assert_close(torch.cat([r0["dense"], r1["dense"]]), dense)

"""Small torch.distributed helpers; every one is a no-op (or the identity) in a single process.

``setup()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and starts the process group: NCCL when CUDA is available, gloo otherwise.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch import Tensor


def is_dist() -> bool:
    """True when a process group is running."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    return rank() == 0


@torch.no_grad()
def all_gather(t: Tensor) -> Tensor:
    """Concatenate ``t`` from every rank along dim 0, in rank order; no gradient flows back.

    Every rank must pass the same shape. With one process, returns ``t``.
    """
    if world_size() == 1:
        return t
    t = t.contiguous()
    parts = [torch.empty_like(t) for _ in range(world_size())]
    dist.all_gather(parts, t)
    return torch.cat(parts, dim=0)


def broadcast_(t: Tensor, src: int = 0) -> Tensor:
    """Overwrite ``t`` in place with rank ``src``'s copy and return it (identity in one process)."""
    if world_size() > 1:
        dist.broadcast(t, src=src)
    return t


def barrier() -> None:
    if is_dist():
        dist.barrier()


def setup(backend: str | None = None) -> torch.device:
    """Start the process group from torchrun's environment and return this process's device.

    Without ``WORLD_SIZE`` > 1 nothing is started and the device is ``cuda`` (if available) or ``cpu``.
    """
    ws = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if ws > 1 and not is_dist():
        dist.init_process_group(backend=backend or ("nccl" if cuda else "gloo"))
    return device


def cleanup() -> None:
    if is_dist():
        dist.destroy_process_group()

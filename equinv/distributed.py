"""Small torch.distributed helpers; every one is a no-op (or the identity) in a single process.

``setup()`` reads torchrun's environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``,
``MASTER_PORT``) and starts the process group: NCCL when CUDA is available, gloo otherwise. Every
collective operation is bounded by ``EQUINV_DIST_TIMEOUT`` seconds (default 600), so a rank that hangs
ends the job with an error instead of blocking the others for ever; the wait while rank 0 prepares
the data alone is bounded by ``PREPARE_FACTOR`` times that. A worker also ends when its launcher dies
(``PR_SET_PDEATHSIG`` on Linux, a watchdog thread elsewhere).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

from equinv.errors import InputError

TIMEOUT_ENV = "EQUINV_DIST_TIMEOUT"
DEFAULT_TIMEOUT_S = 600.0
#: Rank 0 decodes and caches the data while the others wait: that wait may take this many timeouts.
PREPARE_FACTOR = 24

_side_group = None  # a gloo group for monitored barriers when the main backend is NCCL


def is_dist() -> bool:
    """True when a process group is running."""
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if is_dist() else 0


def world_size() -> int:
    """The number of processes in the group (1 without one)."""
    return dist.get_world_size() if is_dist() else 1


def is_main() -> bool:
    """True on rank 0, the process that writes files and logs."""
    return rank() == 0


def launched_world_size() -> int:
    """The number of processes the launcher (torchrun) started, before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def timeout_s() -> float:
    """Seconds any collective operation may wait: ``EQUINV_DIST_TIMEOUT`` (default 600)."""
    raw = os.environ.get(TIMEOUT_ENV, "")
    try:
        value = float(raw) if raw.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise InputError(f"{TIMEOUT_ENV} must be a number of seconds > 0, got {raw!r}")
    return value


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


def agree(flag: bool, device: torch.device | str = "cpu") -> bool:
    """Rank 0's ``flag`` on every rank (the flag itself in one process)."""
    if not is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(broadcast_(t, 0).item() > 0.5)


def any_rank(flag: bool | Tensor, device: torch.device | str = "cpu") -> bool:
    """True on every rank when ``flag`` (a bool or a 0-d bool tensor) is true on at least one rank."""
    if not is_dist():
        return bool(flag)
    t = torch.as_tensor(flag, device=device).reshape(1).to(torch.float32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0.5)


def barrier(timeout: float | None = None) -> None:
    """Wait for every rank, at most ``timeout`` seconds (default :func:`timeout_s`).

    A gloo monitored barrier: when a rank does not arrive in time, rank 0's error names it.
    """
    if not is_dist():
        return
    dist.monitored_barrier(group=_side_group, timeout=timedelta(seconds=timeout or timeout_s()))


def setup(backend: str | None = None) -> torch.device:
    """Start the process group from torchrun's environment and return this process's device.

    Without ``WORLD_SIZE`` > 1 nothing is started and the device is ``cuda`` (if available) or ``cpu``.
    """
    global _side_group
    ws = launched_world_size()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if ws > 1 and not is_dist():
        limit = timeout_s()
        die_with_parent()
        backend = backend or ("nccl" if cuda else "gloo")
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=limit))
        if backend != "gloo":
            _side_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=limit))
    return device


def cleanup() -> None:
    """End the process group (if any)."""
    global _side_group
    if is_dist():
        dist.destroy_process_group()
    _side_group = None


def collective_failure(err: BaseException) -> InputError | None:
    """A one-line error for a collective that timed out or lost a peer (``None`` for other errors)."""
    text = str(err)
    if world_size() == 1 or not isinstance(err, RuntimeError):
        return None
    signs = ("timed out", "timeout", "connection", "peer", "gloo", "nccl")
    if not any(s in text.lower() for s in signs):
        return None
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(err).__name__)
    return InputError(f"rank {rank()}: a collective operation failed (another rank hung past "
                      f"{TIMEOUT_ENV}={timeout_s():g} s or died): {first}")


def die_with_parent() -> None:
    """End this process when its parent (the launcher) dies, so no worker outlives a killed job."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        pr_set_pdeathsig = 1
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0) == 0:
            if os.getppid() != parent:  # the launcher died before prctl took effect
                os.kill(os.getpid(), signal.SIGTERM)
            return

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(2.0)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="equinv-parent-watchdog", daemon=True).start()

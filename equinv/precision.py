"""How network passes compute: precision ``fp32`` (the reference's) or ``bf16``, and the memory order.

``bf16`` runs convolutions and matrix products under ``torch.autocast`` in bfloat16 (on a CPU through
oneDNN, which has native kernels only with AVX-512 BF16 or AMX; on CUDA the same switch is automatic
mixed precision), always with channels-last memory order, which is what oneDNN's and cuDNN's reduced-
precision kernels want. Weights, optimizer state, losses, logits and queues stay float32: autocast
keeps parameters in float32 and casts per operation, and every loss in :mod:`equinv.losses` computes
in float32 with autocast disabled. bfloat16 has float32's exponent range, so no loss scaling is needed.

``channels_last`` alone keeps fp32 arithmetic but stores activations NHWC, which oneDNN's fp32
convolutions also run faster on (the results differ from the contiguous layout's only by float
rounding order).

A CPU without native bf16 emulates it, several times slower than fp32: :func:`native_bf16` tells, and
the commands warn. ``python bench/pretrain_throughput.py`` measures every combination side by side;
docs/precision.md has the figures and the numerics of a MoCo run under each.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

PRECISIONS = ("fp32", "bf16")
DEFAULT = "fp32"


def check(precision: str) -> str:
    """``precision`` if known, else a ``ValueError`` naming the choices."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    return precision


def supported(precision: str, device: torch.device | str) -> bool:
    """Whether ``device`` can run ``precision`` (bf16 needs a CUDA device with bf16 support, or any CPU)."""
    device = torch.device(device)
    if check(precision) == "fp32" or device.type == "cpu":
        return True
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` has native bf16 kernels (a CUDA GPU with bf16; a CPU with AVX-512 BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def warn_if_emulated(precision: str, device: torch.device | str) -> None:
    """One line on stderr when ``bf16`` will be emulated (much slower than fp32) on ``device``."""
    if precision == "bf16" and not native_bf16(device):
        import sys

        print(f"equinv: warning: {device} has no native bf16 kernels (AVX-512 BF16 / AMX); --precision bf16 is "
              "emulated there and several times slower than fp32", file=sys.stderr)


def channels_last_of(precision: str, channels_last: bool = False) -> bool:
    """Whether passes use channels-last: asked for, or implied by ``bf16``."""
    return bool(channels_last) or check(precision) == "bf16"


def prepare(module: nn.Module, precision: str, channels_last: bool = False) -> nn.Module:
    """``module`` with its 4-D weights in the memory order of ``precision`` / ``channels_last`` (in place)."""
    if channels_last_of(precision, channels_last):
        module.to(memory_format=torch.channels_last)
    return module


def inputs(x: Tensor, precision: str, channels_last: bool = False) -> Tensor:
    """A 4-D input batch in the memory order of ``precision`` / ``channels_last`` (the same tensor if so)."""
    if x.dim() == 4 and channels_last_of(precision, channels_last):
        return x.contiguous(memory_format=torch.channels_last)
    return x


def run(fn, x: Tensor, precision: str, channels_last: bool = False):
    """``fn(x)`` at ``precision`` with ``x`` in its memory order (exactly ``fn(x)`` for contiguous fp32)."""
    if check(precision) == "fp32":  # no autocast context at all: some device types (meta) have none
        return fn(inputs(x, precision, channels_last))
    with autocast(x.device, precision):
        return fn(inputs(x, precision, channels_last))


def plain(t: Tensor, precision: str, channels_last: bool = False) -> Tensor:
    """An output of a pass at ``precision`` as float32 in the default memory order (``t`` itself, whatever its
    dtype, after a contiguous fp32 pass)."""
    return t if not channels_last_of(precision, channels_last) else t.float().contiguous()


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str) -> Iterator[None]:
    """Run the enclosed network passes at ``precision`` (a no-op for ``fp32``)."""
    device = torch.device(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=check(precision) == "bf16"):
        yield

"""Process-level tuning applied once at start-up by the CLI."""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_MAX = -1, -2, -4  # glibc mallopt parameters (malloc.h)


def tune_allocator() -> bool:
    """Make glibc keep freed large blocks instead of unmapping them; returns whether it was applied.

    CPU training allocates and frees tensors of tens of MB every step (the regressor's 48² heat-maps).
    glibc serves each from a fresh ``mmap`` and returns it on free, so every step pays page faults
    on zeroed pages: on 2 cores a third of the regressor step went to the kernel (``bench`` note in
    docs/evaluation.md). Serving them from the heap and never trimming it trades a higher resident
    size (the peak stays mapped) for ~30 % faster steps. Skipped when the user set any ``MALLOC_*``
    variable, with ``EQUINV_MALLOPT=0``, or off glibc.
    """
    if os.environ.get("EQUINV_MALLOPT", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return (mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
            and mallopt(_M_TOP_PAD, 64 << 20) == 1)

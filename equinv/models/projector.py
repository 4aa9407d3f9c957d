"""Feature projector ("feature distiller", protocol.md §3, §8 item 1) on a frozen hypercolumn.

Two modes:

* ``softmax`` (the reference code, CL2 ``models/feat_distiller.py``): a 1×1 convolution with bias, then
  for every output channel a spatial softmax over all ``H·W`` positions of ``mul·(wᶜ·Φ_u + b_c)``. The
  output is ``dim`` heat-maps that each sum to 1 over the grid. ``mul`` (``softargmax_mul``) is 7 for
  d = 128/256 and 6.5 for d = 64 (CL2 README), the default picked by ``dim``.
* ``linear`` (the paper, P:91,95): ``Φ' = wᵀΦ``, no bias, no softmax.

A trained projector (``equinv project``) is read back with :func:`load_projector`.

The convolution is a :class:`~equinv.models.hypercolumn.FactorisedConv1x1`: ``forward(maps, size)``
takes the hypercolumn's per-layer maps at their native resolution (``Hypercolumn.maps``) and returns
``(B, dim, size, size)`` without materialising the hypercolumn (24² for training, 96² for matching).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from equinv.checkpoint import Checkpoint
from equinv.errors import InputError
from equinv.models.hypercolumn import FactorisedConv1x1

MODES = {"softmax": "softmax", "reference": "softmax", "linear": "linear", "paper": "linear"}


def default_softargmax_mul(dim: int) -> float:
    """The reference multiplier: 6.5 for d = 64, 7 otherwise (CL2 README)."""
    return 6.5 if dim == 64 else 7.0


class Projector(nn.Module):
    """``dim`` projected channels from a hypercolumn.

    Args:
        channels: per-layer channel counts (``Hypercolumn.channels``).
        dim: output channels d.
        mode: ``softmax`` (alias ``reference``) or ``linear`` (alias ``paper``).
        softargmax_mul: softmax multiplier; ``None`` = 6.5 for d = 64 else 7 (ignored in linear mode).
    """

    def __init__(self, channels: Sequence[int], dim: int = 64, mode: str = "softmax",
                 softargmax_mul: float | None = None):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown projector mode {mode!r}; choose softmax or linear")
        self.mode = MODES[mode]
        self.dim = dim
        self.channels = tuple(channels)
        self.softargmax_mul = float(default_softargmax_mul(dim) if softargmax_mul is None else softargmax_mul)
        self.conv = FactorisedConv1x1(self.channels, dim, bias=self.mode == "softmax")

    def linear(self, maps: Sequence[Tensor], size: int) -> Tensor:
        """The linear part ``wᵀΦ (+ b)`` without the spatial softmax (the paper's ``Φ'``), ``(B, dim, size, size)``.

        For a ``softmax`` projector, ``log`` of :meth:`forward` equals ``mul ·`` this minus a per-image,
        per-channel constant, which a spatial softmax downstream (the regressor's heat-maps) ignores.
        """
        return self.conv(maps, size)

    def forward(self, maps: Sequence[Tensor], size: int) -> Tensor:
        """Per-layer maps (each ``(B, C_l, h_l, w_l)``) → ``(B, dim, size, size)``."""
        y = self.conv(maps, size)
        if self.mode == "softmax":
            b, d, h, w = y.shape
            y = torch.softmax(self.softargmax_mul * y.reshape(b, d, h * w), dim=-1).reshape(b, d, h, w)
        return y

    def extra_repr(self) -> str:
        mul = f", softargmax_mul={self.softargmax_mul}" if self.mode == "softmax" else ""
        return f"in={sum(self.channels)}, dim={self.dim}, mode={self.mode}{mul}"


def load_projector(path: str | Path, device: str | torch.device = "cpu") -> tuple[Projector, dict]:
    """A trained projector from ``best``/``last.safetensors`` (or a run dir → its best), with its config dict.

    The checkpoint's metadata holds the run's config (``dim``, ``mode``, ``softargmax_mul``), the
    hypercolumn's per-layer ``channels`` and the projector's kind (``projector``: softmax | linear; runs
    written before it existed have the kind of their ``mode``); returns ``(projector in eval mode on device,
    config dict)``.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "best.safetensors"
    ck = Checkpoint(p, device="cpu")
    if "config" not in ck.meta or "channels" not in ck.meta:
        raise InputError("not a projector checkpoint (no config/channels in its metadata)", p)
    c = ck.meta["config"]
    kind = ck.meta.get("projector") or c.get("mode", "reference")
    proj = Projector(ck.meta["channels"], c.get("dim", 64), kind, c.get("softargmax_mul"))
    proj.load_state_dict(ck.model)
    return proj.to(device).eval(), c

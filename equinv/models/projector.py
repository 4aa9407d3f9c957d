"""Feature projector ("feature distiller", protocol.md §3, §8 item 1) on a frozen hypercolumn.

Two modes:

* ``softmax`` (the reference code, CL2 ``models/feat_distiller.py``): a 1×1 convolution with bias, then
  for every output channel a spatial softmax over all ``H·W`` positions of ``mul·(wᶜ·Φ_u + b_c)``. The
  output is ``dim`` heat-maps that each sum to 1 over the grid. ``mul`` (``softargmax_mul``) is 7 for
  d = 128/256 and 6.5 for d = 64 (CL2 README), the default picked by ``dim``.
* ``linear`` (the paper, P:91,95): ``Φ' = wᵀΦ``, no bias, no softmax.

A trained projector (``equinv project``) is read back with :func:`read_projector` (or :func:`load_projector`).
A projector trained together with its trunk (``equinv project --trunk-lr``, :class:`TunedProjector`) also
carries the trunk's weights (``read_projector(...).trunk``, or :func:`load_tuned_trunk` alone); the projected
feature source reads its hypercolumn through them.

The convolution is a :class:`~equinv.models.hypercolumn.FactorisedConv1x1`: ``forward(maps, size)``
takes the hypercolumn's per-layer maps at their native resolution (``Hypercolumn.maps``) and returns
``(B, dim, size, size)`` without materialising the hypercolumn (24² for training, 96² for matching).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from equinv.checkpoint import Checkpoint
from equinv.errors import InputError
from equinv.models.hypercolumn import FactorisedConv1x1

#: Checkpoint key prefixes of a :class:`TunedProjector`: the projector's tensors and the trunk's.
PROJECTOR_KEYS, TRUNK_KEYS = "projector.", "trunk."
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


class TunedProjector(nn.Module):
    """A projector and the trunk it is trained with (``equinv project --trunk-lr``), saved as one state dict.

    Keys: the projector's under ``projector.`` and the trunk's (torchvision names) under ``trunk.``. The trunk's
    batch-norm layers keep their statistics: :meth:`train` reaches the projector only (the projector's batches of
    32 are too small to re-estimate them, and the statistics are what the frozen-trunk projector was trained on).
    """

    def __init__(self, projector: Projector, trunk: nn.Module):
        super().__init__()
        self.projector, self.trunk = projector, trunk

    def train(self, mode: bool = True) -> TunedProjector:
        super().train(mode)
        self.trunk.eval()
        return self


def _checkpoint(path: str | Path) -> tuple[Checkpoint, Path]:
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "best.safetensors"
    ck = Checkpoint(p, device="cpu")
    if "config" not in ck.meta or "channels" not in ck.meta:
        raise InputError("not a projector checkpoint (no config/channels in its metadata)", p)
    return ck, p


def _split(state: dict[str, Tensor]) -> tuple[dict[str, Tensor], dict[str, Tensor] | None]:
    """A checkpoint's model tensors → ``(projector state, trunk state or None)``."""
    if not any(k.startswith(TRUNK_KEYS) for k in state):
        return state, None
    proj = {k[len(PROJECTOR_KEYS):]: v for k, v in state.items() if k.startswith(PROJECTOR_KEYS)}
    return proj, {k[len(TRUNK_KEYS):]: v for k, v in state.items() if k.startswith(TRUNK_KEYS)}


def load_tuned_trunk(path: str | Path) -> dict[str, Tensor] | None:
    """The trunk weights (torchvision names) a projector checkpoint carries when it was trained with its trunk
    (``equinv project --trunk-lr``); ``None`` for a projector trained on a frozen trunk."""
    ck, _ = _checkpoint(path)
    return _split(ck.model)[1]


class SavedProjector(NamedTuple):
    """A projector checkpoint read once: the projector (eval mode), its run's config dict and, for a projector
    trained with its trunk (``equinv project --trunk-lr``), the trunk's weights (torchvision names; else ``None``)."""

    projector: Projector
    config: dict
    trunk: dict[str, Tensor] | None


def read_projector(path: str | Path, device: str | torch.device = "cpu") -> SavedProjector:
    """A trained projector from ``best``/``last.safetensors`` (or a run dir → its best), with its config and trunk.

    The checkpoint's metadata holds the run's config (``dim``, ``mode``, ``softargmax_mul``), the
    hypercolumn's per-layer ``channels`` and the projector's kind (``projector``: softmax | linear; runs
    written before it existed have the kind of their ``mode``).
    """
    ck, _ = _checkpoint(path)
    c = ck.meta["config"]
    kind = ck.meta.get("projector") or c.get("mode", "reference")
    proj = Projector(ck.meta["channels"], c.get("dim", 64), kind, c.get("softargmax_mul"))
    state, trunk = _split(ck.model)
    proj.load_state_dict(state)
    return SavedProjector(proj.to(device).eval(), c, trunk)


def load_projector(path: str | Path, device: str | torch.device = "cpu") -> tuple[Projector, dict]:
    """``(projector in eval mode on device, config dict)`` of :func:`read_projector` (the trunk left out)."""
    saved = read_projector(path, device)
    return saved.projector, saved.config

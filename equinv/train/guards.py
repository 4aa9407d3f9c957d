"""Training guards: nonsensical options refused up front, a diverging run stopped before it saves.

:func:`check_options` refuses, with one line naming the flag, values no run can train with (a zero
batch, a negative or NaN learning rate, a momentum outside [0, 1], ...). :class:`FiniteGuard` notices a
non-finite loss without a host sync per step: each step ORs ``!isfinite(loss)`` into a flag on the
device, which is read only where the engine already syncs (log lines) and before every checkpoint or
weights file is written, together with a check that every weight is finite.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from equinv import distributed as D
from equinv import precision as precision_lib
from equinv.errors import InputError
from equinv.train.config import flag

#: rule → (test, what the value must be)
RULES = {
    "count": (lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "count0": (lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "positive": (lambda v: math.isfinite(v) and v > 0, "a finite number > 0"),
    "nonneg": (lambda v: math.isfinite(v) and v >= 0, "a finite number >= 0"),
    "unit": (lambda v: 0 <= v <= 1, "in [0, 1]"),
    "beta": (lambda v: 0 <= v < 1, "in [0, 1)"),
}


class TrainingError(InputError):
    """A run that must stop: it diverged, or a collective operation failed. Printed on one line."""


def check_options(cfg: object, **rules: Iterable[str]) -> None:
    """Refuse the first option of ``cfg`` that breaks its rule (``count=("epochs", ...)``, ``unit=...``).

    Rules: ``count`` (integer ≥ 1), ``count0`` (integer ≥ 0), ``positive``, ``nonneg`` (finite), ``unit``
    ([0, 1]), ``beta`` ([0, 1)). ``None`` values (unset options) are skipped.
    """
    for rule, names in rules.items():
        test, must = RULES[rule]
        for name in names:
            v = getattr(cfg, name)
            if v is None or isinstance(v, bool):
                continue
            try:
                ok = isinstance(v, (int, float)) and test(v)
            except TypeError:
                ok = False
            if not ok:
                raise InputError(f"{flag(name)} must be {must}, got {v!r}")


def check_precision(precision: str, device: torch.device | str | None = None) -> None:
    """Refuse an unknown ``--precision``, or one ``device`` cannot run (bf16 on a GPU without it)."""
    if precision not in precision_lib.PRECISIONS:
        raise InputError(f"--precision must be one of {', '.join(precision_lib.PRECISIONS)}, got {precision!r}")
    if device is not None and not precision_lib.supported(precision, device):
        raise InputError(f"--precision {precision} is not supported on {device}; use --precision fp32")


def all_finite(module: nn.Module) -> Tensor:
    """A 0-d bool tensor on the module's device: every floating-point parameter and buffer is finite."""
    checks = [t.isfinite().all() for t in module.state_dict().values() if t.is_floating_point()]
    return torch.stack(checks).all() if checks else torch.tensor(True)


class FiniteGuard:
    """Accumulates on the device whether any loss since the start was non-finite."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.bad = torch.zeros((), dtype=torch.bool, device=self.device)

    def observe(self, loss: Tensor) -> None:
        """Record one step's loss (no host sync)."""
        self.bad.logical_or_(~torch.isfinite(loss.detach()).all().to(self.device))

    def diverged(self, model: nn.Module | None = None) -> bool:
        """True on every rank when a loss (on any rank) or a weight of ``model`` is non-finite (one sync)."""
        flag_ = self.bad.clone()
        if model is not None:
            flag_ |= ~all_finite(model).to(self.device)
        return D.any_rank(flag_, self.device)

"""Named MoCo pretraining recipes (``equinv pretrain --preset``): plain values, no torch, so ``--help`` stays fast."""

from __future__ import annotations

#: Named recipes: the values each one sets; options given explicitly win. ``paper`` is the reference code's
#: MoCo v1 (protocol.md §1), which the paper's tables use. ``small`` is for a few thousand images and an hour
#: of compute, chosen on validation splits at equinv's CPU budget (experiments/small_data_sweep.py,
#: docs/pretraining.md): MoCo v2's MLP head and temperature 0.2, half the batch (twice the updates in the same
#: wall-clock, lr scaled linearly) and a queue of 1,024 (a seventh of 7,000 images, not 58 %).
PRESETS: dict[str, dict] = {
    "paper": {},
    "small": {"head": "mlp", "temperature": 0.2, "batch_size": 128, "queue": 1024},
}

"""Named MoCo pretraining recipes (``equinv pretrain --preset``): plain values, no torch, so ``--help`` stays fast."""

from __future__ import annotations

# the paper's MoCo + equinv's equivariance term (Eq. 3 on points tracked through both views, weight 1, logit
# multiplier 20: chosen over 7 on five-epoch validation runs, experiments/findings.md)
_DENSE = {"dense": 1.0, "dense_temperature": 20.0}

#: Named recipes: the values each one sets; options given explicitly win. ``paper`` is the reference code's
#: MoCo v1 (protocol.md §1), which the paper's tables use, and the default. ``small`` (MoCo v2's MLP head and
#: temperature 0.2, half the batch with lr scaled linearly, a queue of 1,024) was chosen for a few thousand
#: images and an hour of compute (experiments/small_data_sweep.py), but at equinv's CPU budget it did worse
#: than ``paper`` on every downstream row (docs/results.md, the ``faces_small_*`` steps): it is kept as the
#: measured alternative, not recommended.
PRESETS: dict[str, dict] = {
    "paper": {},
    "small": {"head": "mlp", "temperature": 0.2, "batch_size": 128, "queue": 1024},
    # _DENSE. At equinv's CPU budget it beats the paper recipe, the random network and same-wall-clock DVE on
    # 5-point faces (docs/results.md, the faces_dense_* steps): the recipe to use for an hour of compute.
    "dense": _DENSE,
    # ``dense`` with DVE's auxiliary step in the equivariance term (each tracked point's descriptor rebuilt from
    # the next image's query map first, ``--dense-aux``). At the CPU budget its hypercolumn matches across
    # identities best of all MoCo runs and does better on 300-W, a little worse than ``dense`` on 5-point faces
    # (docs/results.md, the faces_dense_aux_* steps).
    "dense_aux": {**_DENSE, "dense_aux": True},
}

"""The evaluation protocol shared by every task: features once → train a head per subset → evaluate → record.

A *task* (landmark regression, figure-ground segmentation) defines how one head is trained on a seeded
subset of the training set and evaluated on each test set; this module owns the rest of the protocol:

* the limited-annotation draws (:func:`draws`): for each requested ``n_train`` (``None`` = all annotations),
  ``repeats`` seeded subsets of that many training rows, drawn with ``numpy.random.default_rng(seed)`` where
  ``seed = cfg_seed·1000003 + n·101 + repeat`` (the reference draws without a seed, protocol §8.12), each
  tiled ``floor(min(tile_to, |train|)/n)`` times per epoch as the reference sampler does;
* the loop over draws and the aggregation of each test set's metrics (mean and std over repeats,
  :func:`~equinv.records.mean_std`), in one ``runs`` list per run record;
* the frozen features of a dataset (:func:`cached_features`, :mod:`equinv.features.cache`), computed once and
  shared by every draw.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch

from equinv.errors import InputError
from equinv.features.cache import FeatureSet, extract_features, feature_key


@dataclass(frozen=True)
class Draw:
    """One seeded training subset: ``rows`` of the training set (``None``: all), tiled ``tile`` times an epoch."""

    n_req: int | None
    repeat: int
    seed: int
    rows: np.ndarray | None
    tile: int

    def entry(self, info: dict) -> dict:
        """The start of this draw's ``per_repeat`` record from the head's training ``info`` (its ``tile``, when
        given, is the tiling actually used)."""
        return {"repeat": self.repeat, "seed": self.seed, "selected_epoch": info["selected_epoch"],
                "tile": info.get("tile", self.tile),
                "final_loss": info["history"][-1]["loss"],
                "train_rows": self.rows.tolist() if self.rows is not None else None, "tests": {}}


def subset_seed(seed: int, n_req: int | None, repeat: int) -> int:
    """The seed of repeat ``repeat`` of the ``n_req``-annotation subsets."""
    return seed * 1000003 + (n_req or 0) * 101 + repeat


def draws(n_req: int | None, n_all: int, repeats: int, seed: int, tile_to: int = 1000) -> list[Draw]:
    """The seeded subsets of one ``n_train`` entry (one draw of everything when ``n_req`` is ``None``)."""
    if n_req is not None and not 1 <= n_req <= n_all:
        raise InputError(f"--n-train {n_req} is outside 1..{n_all} (training images)")
    out = []
    for r in range(repeats if n_req is not None else 1):
        s = subset_seed(seed, n_req, r)
        if n_req is None:
            out.append(Draw(None, r, s, None, 1))
            continue
        rows = np.sort(np.random.default_rng(s).choice(n_all, size=n_req, replace=False))
        out.append(Draw(n_req, r, s, rows, max(1, min(tile_to, n_all) // n_req)))
    return out


class Task(Protocol):
    """What a task gives the protocol loop."""

    tests: list[str]

    def fit(self, draw: Draw, run_index: int) -> tuple[dict, list[dict]]:
        """Train a head on ``draw``; its ``per_repeat`` entry and one metrics dict per test set."""

    def run_fields(self, n_req: int | None) -> dict:
        """Extra fields of a ``runs`` entry (e.g. the learning rate used)."""

    def summarise(self, results: list[dict]) -> dict:
        """One test set's metrics over the repeats (means, stds, counts)."""


def run_protocol(task: Task, n_train: list[int | None], n_all: int, repeats: int, seed: int,
                 tile_to: int = 1000) -> list[dict]:
    """Every ``n_train`` entry × repeat of ``task``: the ``runs`` list of the run record."""
    runs = []
    for n_req in n_train:
        subsets = draws(n_req, n_all, repeats, seed, tile_to)
        per_test: list[list[dict]] = [[] for _ in task.tests]
        reps = []
        for d in subsets:
            rep, results = task.fit(d, len(runs))
            for acc, res in zip(per_test, results, strict=True):
                acc.append(res)
            reps.append(rep)
        runs.append({"n_train": n_req if n_req is not None else n_all, "all_annotations": n_req is None,
                     "repeats": len(subsets), **task.run_fields(n_req),
                     "tests": {spec: task.summarise(res) for spec, res in zip(task.tests, per_test, strict=True)},
                     "per_repeat": reps})
    return runs


def check_counts(epochs: int, repeats: int, batch_size: int, tests: list[str]) -> None:
    """The protocol's one-line errors for settings that cannot run."""
    if not tests:
        raise InputError("give at least one test spec")
    if epochs < 1 or repeats < 1 or batch_size < 1:
        raise InputError("epochs, repeats and batch size must be positive")


def pick_device(name: str | None) -> torch.device:
    """``name``, or CUDA when available, else the CPU."""
    return torch.device(name or ("cuda" if torch.cuda.is_available() else "cpu"))


def cached_features(ds, spec: str, source, stats: str, device, *, cache_dir=None, batch: int = 64, eyes=None,
                    progress: bool = False, tps_copies: int = 0, seed: int = 0) -> FeatureSet:
    """The frozen ``source``'s features of ``ds`` (memmaps under ``cache_dir`` keyed by spec, source and
    preprocessing when given); with ``tps_copies``, of that many TPS-warped copies of every image, drawn from
    ``seed`` (image-major rows, :func:`~equinv.features.cache.extract_features`)."""
    extra = f"tps{tps_copies}-seed{seed}" if tps_copies else ""
    key = feature_key(spec, source.spec.identity(), source.taps, ds.pre, extra) if cache_dir else None
    gen = torch.Generator().manual_seed(seed) if tps_copies else None
    return extract_features(ds, source, stats, device, batch=batch, spec=spec, eyes=eyes, cache_dir=cache_dir,
                            cache_key=key, progress=progress, tps_copies=tps_copies, generator=gen)


def first_views(ds, n: int) -> np.ndarray:
    """The first ``n`` final views of ``ds`` as ``(n, S, S, 3)`` uint8 (what the report draws on)."""
    from equinv.data.dataset import final_view

    m = min(n, len(ds))
    if m == 0:
        return np.zeros((0, ds.pre.size, ds.pre.size, 3), np.uint8)
    return final_view(ds.__getitems__(list(range(m))), ds.pre)["image"].permute(0, 2, 3, 1).numpy()

"""Training images from ``--data`` specs, decoded once into the cache (rank 0 first under torchrun)."""

from __future__ import annotations

from equinv import distributed as D
from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.errors import InputError, SkipLog


def build_images(cfg, pre: Preprocess, progress: bool) -> ImageSet:
    """Read every spec of ``cfg.data``, cache decoded canvases and concatenate them.

    ``cfg`` gives ``data``, ``skip_bad``, ``max_images`` and ``seed`` (a seeded subset). Under torchrun
    rank 0 decodes while the others wait (up to ``PREPARE_FACTOR`` collective timeouts), then they read
    the cache.
    """
    log = SkipLog(skip_bad=cfg.skip_bad)
    sets = []
    for spec in cfg.data:
        ds = LandmarkDataset(read_index(spec, log), pre)
        if D.is_main():
            ds.prepare(log, progress=progress)
        D.barrier(D.timeout_s() * D.PREPARE_FACTOR)
        if not D.is_main():
            ds.prepare(log, progress=False)
        sets.append(ds)
    if log.skips and D.is_main():
        print(f"{len(log.skips)} bad input(s) skipped, e.g. {log.skips[0]}")
    return ImageSet(sets, max_images=cfg.max_images, seed=cfg.seed)


def require_batch(n_images: int, batch_size: int) -> None:
    """Refuse a dataset smaller than one batch (a run of zero steps)."""
    if n_images < batch_size:
        raise InputError(f"only {n_images} images for a batch of {batch_size}; lower --batch-size")

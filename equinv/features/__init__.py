"""Feature sources: what a frozen network gives a head, described once and built in one place.

* :mod:`equinv.features.spec` — :class:`FeatureSpec`, the description (backbone, arch, taps, grid, kind,
  projector / parts / DVE) that commands, caches and saved models all record;
* :mod:`equinv.features.stats` — the per-kind input statistics (one table);
* :mod:`equinv.features.sources` — :func:`build_source`: a spec → an ``nn.Module`` with per-layer maps;
* :mod:`equinv.features.descriptors` — unit-norm dense descriptors of any source (matching, transfer, parts);
* :mod:`equinv.features.cache` — frozen features of a dataset computed once (memory or ``.npy`` memmaps).
"""

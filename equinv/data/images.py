"""Images only, from one or several datasets: what unlabeled (contrastive) training reads."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from equinv.data.dataset import LandmarkDataset


class ImageSet(Dataset):
    """The canvases of several :class:`LandmarkDataset` s (same canvas size), as one dataset.

    Args:
        sets: datasets to concatenate (their landmarks are ignored).
        max_images: keep a seeded random subset of this many images (all when ``None``).
        seed: seed of that subset.

    ``__getitems__`` returns ``{"image": (B, 3, S, S) uint8, "index": (B,) int64}``.
    """

    def __init__(self, sets: Sequence[LandmarkDataset], max_images: int | None = None, seed: int = 0):
        if not sets:
            raise ValueError("ImageSet needs at least one dataset")
        sides = {ds.pre.canvas for ds in sets}
        if len(sides) > 1:
            raise ValueError(f"datasets have different canvas sizes {sorted(sides)}; use one --size/--context")
        self.sets = list(sets)
        self.offsets = np.cumsum([0] + [len(ds) for ds in sets])
        order = np.arange(self.offsets[-1])
        if max_images is not None and max_images < len(order):
            g = torch.Generator().manual_seed(seed)
            order = np.sort(torch.randperm(len(order), generator=g)[:max_images].numpy())
        self.order = order

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, i: int) -> dict:
        b = self.__getitems__([i])
        return {k: v[0] for k, v in b.items()}

    def __getitems__(self, idx: Sequence[int]) -> dict:
        g = self.order[np.asarray(idx, dtype=np.int64)]
        which = np.searchsorted(self.offsets, g, side="right") - 1
        out = None
        for s in np.unique(which):
            rows = np.flatnonzero(which == s)
            imgs = self.sets[s].__getitems__((g[rows] - self.offsets[s]).tolist())["image"]
            if out is None:
                out = torch.empty((len(g), *imgs.shape[1:]), dtype=imgs.dtype)
            out[torch.from_numpy(rows)] = imgs
        return {"image": out, "index": torch.from_numpy(g)}

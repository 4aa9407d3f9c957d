"""A torch Dataset over a :class:`LandmarkIndex`: preprocessed, cached, batched without Python loops.

Typical use::

    index = read_index("celeba:../shared/data/celeba?split=not_mafl")
    ds = LandmarkDataset(index, Preprocess(size=96))
    ds.prepare()                          # decode once into the memory-mapped cache (progress bar)
    loader = make_loader(ds, batch_size=256, shuffle=True)
    for batch in loader:                  # {"image": (B,3,S,S) uint8, "landmarks": (B,K,2), ...}
        ...

Items are *canvases* (136 px for 96-px faces); :func:`final_view` slices the evaluated centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from equinv import coords as C
from equinv.data.cache import BAD, EMPTY, ImageCache, cache_key
from equinv.data.image_io import image_size, load_rgb
from equinv.data.preprocess import Preprocess, prepare_landmarks, resample
from equinv.data.sample import LandmarkIndex, Sample
from equinv.errors import InputError, SkipLog


class LandmarkDataset(Dataset):
    """Preprocessed images and canvas-frame landmarks of one index.

    Args:
        index: records from :func:`equinv.data.spec.read_index`.
        pre: preprocessing (size, context, crop rule).
        cache: keep decoded canvases in a memory-mapped cache (default); ``False`` decodes every time.
    """

    def __init__(self, index: LandmarkIndex, pre: Preprocess | None = None, cache: bool = True):
        self.index = index
        self.pre = (pre or Preprocess()).resolved(index.kind)
        n, k = len(index.records), len(index.names)
        self.landmarks = np.zeros((n, k, 2), np.float32)
        self.visible = np.zeros((n, k), bool)
        self.boxes = np.zeros((n, 4), np.float64)
        key_parts = [index.kind, repr(sorted(self.pre.as_dict().items()))]
        for i, r in enumerate(index.records):
            size = r.meta.get("size") or image_size(r.path)
            r.meta["size"] = size
            self.landmarks[i], box = prepare_landmarks(r, size, self.pre)
            self.visible[i] = r.visible
            self.boxes[i] = box
            st = r.path.stat()
            key_parts.append(f"{r.path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{box}")
        self.cache: ImageCache | None = None
        if cache:
            meta = {"kind": index.kind, "root": str(index.root), "preprocess": self.pre.as_dict()}
            self.cache = ImageCache(cache_key(key_parts), n, self.pre.canvas, meta)
        self.valid = np.arange(n)
        if self.cache is not None:
            self.valid = np.flatnonzero(np.asarray(self.cache.state) != BAD)

    @property
    def names(self) -> tuple[str, ...]:
        return self.index.names

    @property
    def flip_perm(self) -> tuple[int, ...]:
        return self.index.flip_perm

    def __len__(self) -> int:
        return len(self.valid)

    def _decode(self, j: int) -> np.ndarray:
        r = self.index.records[j]
        return resample(load_rgb(r.path), tuple(self.boxes[j]), self.pre.canvas)

    def _image(self, j: int) -> np.ndarray:
        if self.cache is None:
            return self._decode(j)
        if self.cache.state[j] == EMPTY:
            self.cache.put(j, self._decode(j))
        return self.cache.images[j]

    def prepare(self, log: SkipLog | None = None, workers: int = 2, progress: bool = True) -> int:
        """Decode every entry not yet in the cache (threads; PIL releases the GIL while decoding).

        Undecodable images raise :class:`InputError`, or, when ``log.skip_bad``, are recorded in
        ``log``, marked bad in the cache and left out of the dataset. Returns the number decoded.
        """
        if self.cache is None:
            return 0
        log = log if log is not None else SkipLog()
        # Entries marked bad by an earlier pass are reported again: nothing is dropped silently.
        reasons = self.cache.bad_reasons()
        for j in np.flatnonzero(np.asarray(self.cache.state) == BAD):
            why = reasons.get(int(j), "cannot decode image")
            log.bad(InputError(f"{why} (found in an earlier pass)", self.index.records[j].path))
        todo = self.cache.missing()
        if len(todo):

            def work(j: int) -> tuple[int, np.ndarray | InputError]:
                try:
                    return j, self._decode(j)
                except InputError as e:
                    return j, e

            bar = tqdm(total=len(todo), desc="decode", unit="img", disable=not progress, leave=False)
            try:
                with ThreadPoolExecutor(max(1, workers)) as pool:
                    for j, out in pool.map(work, todo):
                        if isinstance(out, InputError):
                            self.cache.mark_bad(j, out.message)
                            log.bad(out)
                        else:
                            self.cache.put(j, out)
                        bar.update()
            finally:
                bar.close()
                self.cache.flush()
        self.valid = np.flatnonzero(np.asarray(self.cache.state) != BAD)
        return len(todo)

    def __getitem__(self, i: int) -> dict:
        return self.__getitems__([i], stack=False)

    def __getitems__(self, idx: Sequence[int], stack: bool = True) -> dict:
        """A whole batch at once: one fancy-index read from the memory map when everything is cached."""
        j = self.valid[np.asarray(idx, dtype=np.int64)]
        if self.cache is not None and (np.asarray(self.cache.state)[j] != EMPTY).all():
            imgs = np.asarray(self.cache.images[np.sort(j)])[np.argsort(np.argsort(j))]
        else:
            imgs = np.stack([self._image(int(t)) for t in j])
        batch = {
            "image": torch.from_numpy(np.ascontiguousarray(imgs)).permute(0, 3, 1, 2).contiguous(),
            "landmarks": torch.from_numpy(self.landmarks[j]),
            "visible": torch.from_numpy(self.visible[j]),
            "index": torch.from_numpy(j),
        }
        if not stack:
            batch = {k: v[0] for k, v in batch.items()}
        return batch

    def sample(self, i: int) -> Sample:
        """Item ``i`` as a canvas :class:`Sample` (for figures and checks)."""
        j = int(self.valid[i])
        r = self.index.records[j]
        img = np.array(self._image(j))
        meta = dict(r.meta, box=tuple(self.boxes[j]))
        return Sample(img, self.landmarks[j].copy(), self.visible[j].copy(), r.names, str(r.path), meta)


def _identity(batch: dict) -> dict:
    return batch


def make_loader(
    ds: LandmarkDataset,
    batch_size: int,
    shuffle: bool = True,
    drop_last: bool = False,
    workers: int = 0,
    generator: torch.Generator | None = None,
    sampler: torch.utils.data.Sampler | None = None,
) -> DataLoader:
    """DataLoader that fetches whole batches through ``__getitems__`` (no per-sample collation)."""
    return DataLoader(
        ds,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,
        sampler=sampler,
        drop_last=drop_last,
        num_workers=workers,
        collate_fn=_identity,
        generator=generator,
        persistent_workers=workers > 0,
    )


def final_view(batch: dict, pre: Preprocess) -> dict:
    """Slice the centre ``pre.size`` square of a canvas batch and shift its landmarks."""
    m, s = pre.margin, pre.size
    out = dict(batch)
    out["image"] = batch["image"][..., m : m + s, m : m + s]
    out["landmarks"] = torch.where(batch["visible"][..., None], C.canvas_to_view(batch["landmarks"], m), 0.0)
    return out


def open_dataset(spec: str, size: int = 96, progress: bool = False, log: SkipLog | None = None) -> LandmarkDataset:
    """The prepared dataset of ``spec`` at final side ``size`` (canvases cached); an error when it has no image."""
    from equinv.data.spec import read_index

    ds = LandmarkDataset(read_index(spec, log), Preprocess(size=size))
    ds.prepare(log, progress=progress)
    if len(ds) == 0:
        raise InputError(f"no usable images in {spec}")
    return ds

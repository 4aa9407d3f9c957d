"""Decoded-image cache: preprocessed uint8 canvases in a memory-mapped array.

Decoding and resampling JPEGs every epoch is the bottleneck on a 2-core machine, so the first pass
writes every preprocessed canvas into ``images.u8`` (shape ``(N, S, S, 3)``) under
``cache_root()/images/<key>/``; later epochs (and later runs) only read memory. The key hashes
everything the pixels depend on: reader kind, each record's file, size and modification time, its
crop box, and the preprocessing settings, so a change in any of them makes a fresh cache.

A per-entry state array (0 = empty, 1 = filled, 2 = undecodable) makes filling resumable and safe to
share between DataLoader worker processes: an entry is marked filled only after its pixels are written.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from equinv.data.paths import cache_root

EMPTY, FILLED, BAD = 0, 1, 2
VERSION = 1


def cache_key(parts: list[str]) -> str:
    """A short stable hash of ``parts``."""
    h = hashlib.sha1()
    for p in parts:
        h.update(p.encode("utf-8", "surrogateescape"))
        h.update(b"\0")
    return h.hexdigest()[:20]


class ImageCache:
    """A memory-mapped ``(N, S, S, 3)`` uint8 array plus per-entry fill states.

    Args:
        key: from :func:`cache_key`.
        n: number of entries.
        side: canvas side ``S``.
        meta: JSON-able description stored beside the arrays (for people reading the cache dir).
        root: cache directory (default ``cache_root()/images``).
    """

    def __init__(self, key: str, n: int, side: int, meta: dict | None = None, root: Path | None = None):
        self.dir = (root or cache_root() / "images") / key
        self.n, self.side = n, side
        self._images: np.memmap | None = None
        self._state: np.memmap | None = None
        self._create(meta or {})

    def _create(self, meta: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        img_path, state_path = self.dir / "images.u8", self.dir / "state.u8"
        nbytes = self.n * self.side * self.side * 3
        for path, size in ((img_path, nbytes), (state_path, self.n)):
            if not path.exists() or path.stat().st_size != size:
                # Sparse file: reserves no disk until entries are written. Created under a temporary
                # name and renamed so a concurrent reader never sees a short file.
                tmp = path.with_suffix(f".tmp{os.getpid()}")
                with open(tmp, "wb") as fh:
                    fh.truncate(size)
                os.replace(tmp, path)
        meta_path = self.dir / "meta.json"
        if not meta_path.exists():
            tmp = meta_path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(dict(meta, version=VERSION, n=self.n, side=self.side), indent=1))
            os.replace(tmp, meta_path)

    # Memmaps are opened lazily so the object pickles cheaply into DataLoader workers.
    def __getstate__(self) -> dict:
        d = self.__dict__.copy()
        d["_images"] = d["_state"] = None
        return d

    @property
    def images(self) -> np.memmap:
        if self._images is None:
            shape = (self.n, self.side, self.side, 3)
            self._images = np.memmap(self.dir / "images.u8", np.uint8, "r+", shape=shape)
        return self._images

    @property
    def state(self) -> np.memmap:
        if self._state is None:
            self._state = np.memmap(self.dir / "state.u8", np.uint8, "r+", shape=(self.n,))
        return self._state

    def put(self, i: int, image: np.ndarray) -> None:
        self.images[i] = image
        self.state[i] = FILLED

    def mark_bad(self, i: int, reason: str = "") -> None:
        """Mark entry ``i`` undecodable; ``reason`` is kept so later passes can report it again."""
        with open(self.dir / "bad.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"i": int(i), "reason": reason}) + "\n")
        self.state[i] = BAD

    def bad_reasons(self) -> dict[int, str]:
        """Reasons recorded by :meth:`mark_bad`, by entry."""
        path = self.dir / "bad.jsonl"
        if not path.exists():
            return {}
        rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        return {r["i"]: r["reason"] for r in rows}

    def flush(self) -> None:
        if self._images is not None:
            self._images.flush()
        if self._state is not None:
            self._state.flush()

    def missing(self) -> np.ndarray:
        """Indices not yet filled (neither filled nor known bad)."""
        return np.flatnonzero(np.asarray(self.state) == EMPTY)

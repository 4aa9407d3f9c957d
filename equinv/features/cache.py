"""Frozen features of a dataset, computed once: fp16 per-layer native maps in memory or ``.npy`` memmaps.

Every image of a dataset goes through a frozen source **once**; its per-layer native maps (the factorised
hypercolumn, or a projected / NMF / DVE map) are kept in fp16 in memory or, with ``cache_dir``, in ``.npy``
memmaps under ``cache_dir/KEY`` that a later run with the same key reuses (the key covers the dataset spec,
the source's :meth:`~equinv.features.spec.FeatureSpec.identity` and the preprocessing). Heads then train
for many epochs on these tensors without running the backbone again (:attr:`FeatureSet.backbone_images`
counts the images that went through it).

Landmarks are stored normalised: ``n = 2·p/(W−1) − 1`` of the final view (W = 96), the regression
protocol's frame (protocol §4).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor, nn
from tqdm.auto import tqdm

from equinv import coords as C
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.features.stats import prepare_input


@dataclass
class FeatureSet:
    """Cached frozen features of one dataset (or only its labels, for fine-tuning).

    Attributes:
        maps: per-tap ``(N, C_l, h_l, w_l)`` fp16 tensors (or numpy memmaps), in tap order; ``[]`` for labels only.
        landmarks: ``(N, K, 2)`` normalised ``[-1, 1]`` coordinates of the final view.
        visible: ``(N, K)`` bool.
        eyes: inter-ocular indices or ``None``.
        spec: the dataset spec.
        backbone_images: images passed through the source to build this set (0 when read from the cache).
    """

    maps: list
    landmarks: Tensor
    visible: Tensor
    eyes: tuple[int, int] | None
    spec: str
    backbone_images: int = 0

    def __len__(self) -> int:
        return self.landmarks.shape[0]

    def batch(self, idx, device) -> list[Tensor]:
        """The maps of rows ``idx`` as float32 tensors on ``device``."""
        idx = np.asarray(idx, dtype=np.int64)
        out = []
        for m in self.maps:
            if isinstance(m, np.ndarray):
                order = np.argsort(idx, kind="stable")
                rows = np.empty((len(idx), *m.shape[1:]), m.dtype)
                rows[order] = m[idx[order]]
                t = torch.from_numpy(rows)
            else:
                t = m[torch.from_numpy(idx)]
            out.append(t.to(device, non_blocking=True).float())
        return out

    def subset(self, rows: np.ndarray) -> FeatureSet:
        """The rows ``rows`` (a new set; memmaps are read into memory)."""
        t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        maps = [m[np.asarray(rows)] if isinstance(m, np.ndarray) else m[t] for m in self.maps]
        return FeatureSet(maps, self.landmarks[t], self.visible[t], self.eyes, self.spec)


def normalise_points(kp: Tensor, width: int) -> Tensor:
    """Final-view pixels → ``[-1, 1]``: ``kp_n = 2·kp/(W−1) − 1`` (protocol §4; :mod:`equinv.coords`)."""
    return C.points_to_norm(kp, width, align_corners=True)


def feature_key(spec: str, source_identity: str, taps, pre, extra: str = "") -> str:
    """The cache key of a dataset's features under a source (20 hex digits)."""
    h = hashlib.sha256(json.dumps([spec, source_identity, list(taps), pre.as_dict(), extra], sort_keys=True).encode())
    return h.hexdigest()[:20]


def _cached(target: Path, shapes, n: int, eyes, spec: str) -> FeatureSet | None:
    """The finished cache under ``target`` if its shapes match, else ``None``."""
    if not (target / "done.json").exists():
        return None
    maps = [np.load(target / f"tap{i}.npy", mmap_mode="r") for i in range(len(shapes))]
    lm = torch.from_numpy(np.load(target / "landmarks.npy"))
    vis = torch.from_numpy(np.load(target / "visible.npy"))
    if all(tuple(m.shape) == s for m, s in zip(maps, shapes, strict=True)) and lm.shape[0] == n:
        return FeatureSet(maps, lm, vis, eyes, spec, 0)
    return None


def _tps_copies(b: dict, copies: int, generator) -> dict:
    """Every image of a canvas batch as ``copies`` TPS-warped copies (image-major), landmarks moved along."""
    from equinv.augment.tps import random_tps

    img = b["image"].float().div(255.0).repeat_interleave(copies, 0)
    lm = b["landmarks"].repeat_interleave(copies, 0)
    vis = b["visible"].repeat_interleave(copies, 0)
    img, lm, vis = random_tps(img, lm, vis, "paper", generator)
    return {"image": img.clamp(0, 1), "landmarks": lm, "visible": vis}


@torch.no_grad()
def extract_features(ds: LandmarkDataset, source: nn.Module, stats: str, device, *, batch: int = 64,
                     spec: str = "", eyes=None, cache_dir: str | Path | None = None, cache_key: str | None = None,
                     rows: np.ndarray | None = None, tps_copies: int = 0, generator: torch.Generator | None = None,
                     progress: bool = False) -> FeatureSet:
    """Run the frozen ``source`` once over ``ds`` (or its ``rows``) and keep its fp16 native maps.

    With ``tps_copies > 0`` every image is instead represented by that many TPS-warped copies (warped on the
    canvas before the centre crop, landmarks moved by the warp and marked invisible where lost); the rows are
    ordered image-major (copies of image 0 first).
    """
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    copies = max(1, tps_copies)
    n = len(rows) * copies
    pre = ds.pre
    probe = source.maps(torch.zeros(1, 3, pre.size, pre.size, device=device))
    shapes = [(n, *p.shape[1:]) for p in probe]
    target = None
    if cache_dir is not None and cache_key is not None:
        target = Path(cache_dir) / cache_key
        hit = _cached(target, shapes, n, eyes, spec)
        if hit is not None:
            return hit
        target.mkdir(parents=True, exist_ok=True)
        maps = [open_memmap(target / f"tap{i}.npy", mode="w+", dtype=np.float16, shape=s) for i, s in enumerate(shapes)]
    else:
        maps = [torch.empty(s, dtype=torch.float16) for s in shapes]
    landmarks, visible = torch.zeros(n, len(ds.names), 2), torch.zeros(n, len(ds.names), dtype=torch.bool)
    per = max(1, batch // copies)
    bar = tqdm(total=n, desc=f"features {spec}"[:60], unit="img", disable=not progress, leave=False)
    for s in range(0, len(rows), per):
        b = ds.__getitems__(rows[s : s + per].tolist())
        view = final_view(_tps_copies(b, copies, generator) if tps_copies > 0 else b, pre)
        x = prepare_input(view["image"], None, stats, device)
        lo, hi = s * copies, s * copies + x.shape[0]
        for m, o in zip(maps, source.maps(x), strict=True):
            o16 = o.to(torch.float16).cpu()
            m[lo:hi] = o16.numpy() if isinstance(m, np.ndarray) else o16
        landmarks[lo:hi] = normalise_points(view["landmarks"].float(), pre.size)
        visible[lo:hi] = view["visible"]
        bar.update(x.shape[0])
    bar.close()
    if target is not None:
        _finish_cache(target, maps, landmarks, visible, spec, n)
    return FeatureSet(maps, landmarks, visible, eyes, spec, n)


def _finish_cache(target: Path, maps, landmarks: Tensor, visible: Tensor, spec: str, n: int) -> None:
    for m in maps:
        m.flush()
    np.save(target / "landmarks.npy", landmarks.numpy())
    np.save(target / "visible.npy", visible.numpy())
    (target / "done.json").write_text(json.dumps({"spec": spec, "n": n}))


def label_set(ds: LandmarkDataset, spec: str = "", batch: int = 256) -> FeatureSet:
    """A :class:`FeatureSet` with the ground truth of ``ds`` and no features (for fine-tuning)."""
    lms, viss = [], []
    for s in range(0, len(ds), batch):
        b = final_view(ds.__getitems__(list(range(s, min(s + batch, len(ds))))), ds.pre)
        lms.append(normalise_points(b["landmarks"].float(), ds.pre.size))
        viss.append(b["visible"])
    return FeatureSet([], torch.cat(lms), torch.cat(viss), getattr(ds, "eyes", None), spec, 0)

"""Landmark matching under TPS warps (protocol.md §5a; CL2 ``train_feature_projector.py:522-681``).

For pairs of images (A, B) taken in dataset order (0, 1), (2, 3), ...:

* each image I gets TPS₁ then TPS₂ (preset ``eval``: warpsd_all 5e-4, subset 5e-3, trans/scale 0.05,
  rot 2.5°) on its canvas (136 px for faces), then the centre slice (20 px → 96²):
  view1 = TPS₂∘TPS₁(I), view2 = TPS₁(I) (:func:`~equinv.augment.tps.warp_pair` conventions);
* source = view1(A); **same** target = view2(A); **different** target = view2(B) (view1(B) unused);
* descriptors at 96² come from ``descriptor_fn`` (:func:`equinv.features.descriptors.descriptor_fn` of any
  source: per-layer L2 normalisation of the bilinear hypercolumn, or a projected vector normalised as a whole);
* each source landmark is rounded to the nearest 96-grid cell, its descriptor is dotted with every
  target pixel and the argmax (hard nearest neighbour) is the prediction;
* the work streams batch by batch: the TPS₁ warps of a batch's 2P images are one call, TPS₂ of its P sources
  another, its views go through the source ``chunk`` at a time, and only the K landmark rows of the similarity
  are formed, from the source's native maps (:mod:`equinv.features.similarity`: no ``D × 96²`` grid exists,
  35 MB an image for the ResNet18 hypercolumn), so memory does not grow with the number of pairs;
* error = Euclidean distance in the 70×70 DVE frame ``(n + 1)/2·69`` of the normalised coordinates
  ``n = 2·px/(W − 1) − 1`` (:func:`equinv.coords.to_dve70`; ``match_error_*``) and in input pixels of the
  96 frame (``match_error_*_px``);
  the mean runs over landmarks visible in source and target, over all pairs.

Deliberate differences from the reference: landmarks are moved through the warps exactly (inverse of the
sampling map, :func:`~equinv.augment.tps.warp_landmarks`) instead of KD-tree nearest pixel, and a
landmark that leaves a view or sits on a fold is left out (counts are reported). The TPS draws of pair
``i`` come from a generator seeded with ``(seed, i)``, so the numbers do not depend on ``batch``
(the reference seeds torch once and draws per batch of 2) beyond float rounding: a landmark whose best two
target pixels tie to ~1e-7 in cosine may go to either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from equinv import coords as C
from equinv.augment.photometric import FACE_MEAN, FACE_STD, normalize
from equinv.augment.tps import TPSConfig, TPSParams, sample_tps, warp_images, warp_landmarks
from equinv.features.similarity import argmax_points, read_cells

DescriptorFn = Callable[[Tensor], Tensor]


def _pair_params(n: int, start: int, seed: int, config) -> tuple[TPSParams, TPSParams]:
    """TPS₁ of images ``start .. start+n-1`` and TPS₂ of the even ones (the sources), each image from its
    own generator (batch-independent; an odd image's TPS₂ would be drawn after its TPS₁ and is never used)."""
    p1, p2 = [], []
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        p1.append(sample_tps(1, config, g))
        if (i - start) % 2 == 0:
            p2.append(sample_tps(1, config, g))

    def cat(ps: list[TPSParams]) -> TPSParams:
        return TPSParams(*(torch.cat([getattr(p, k) for p in ps]) for k in ("centers", "kernel_weights", "affine")))

    return cat(p1), cat(p2)


@dataclass
class PairViews:
    """One batch of P pairs (A, B) at the final size, normalised; landmarks in pixels of the ``S`` frame.

    ``src`` ``(P, 3, S, S)``: view 1 of each A; ``tgt`` ``(2P, 3, S, S)``: view 2 of A₀, B₀, A₁, B₁, …
    (even rows: same identity, odd rows: different identity); ``*_lm`` ``(·, K, 2)``, ``*_vis`` ``(·, K)``.
    """

    src: Tensor
    src_lm: Tensor
    src_vis: Tensor
    tgt: Tensor
    tgt_lm: Tensor
    tgt_vis: Tensor


def pair_views(dataset, images: Sequence[int], first: int, seed: int, tps, dev: torch.device, mean,
               std) -> PairViews:
    """The warped views of dataset items ``images`` (pairs ``(images[2i], images[2i+1])``), the first being image
    ``first`` (even) of the run, which seeds the draws: all TPS₁ warps as one batch, then TPS₂ on the sources."""
    items = dataset.__getitems__(list(images))
    imgs = items["image"].to(dev).float().div_(255.0)
    lm, vis = items["landmarks"].to(dev).float(), items["visible"].to(dev)
    canvas, size, margin = imgs.shape[-1], dataset.pre.size, dataset.pre.margin
    p1, p2 = (p.to(dev) for p in _pair_params(imgs.shape[0], first, seed, tps))
    view2 = warp_images(imgs, p1)  # TPS₁(I)
    view1 = warp_images(view2[0::2], p2)  # TPS₂(TPS₁(A)): the source views
    lm2, ok2 = warp_landmarks(p1, lm, canvas, canvas, return_valid=True)
    lm1, ok1 = warp_landmarks(p2, lm2[0::2], canvas, canvas, return_valid=True)
    sl = slice(margin, margin + size)
    return PairViews(normalize(view1[:, :, sl, sl], mean, std), C.canvas_to_view(lm1, margin),
                     vis[0::2] & ok2[0::2] & ok1,
                     normalize(view2[:, :, sl, sl], mean, std), C.canvas_to_view(lm2, margin), vis & ok2)


class _Materialised:
    """A plain descriptor function's ``(B, D, S, S)`` grids, read like a
    :class:`~equinv.features.similarity.GridDescriptors` (raw dot products: the function normalises, if it means to).
    """

    def __init__(self, desc: Tensor):
        self.desc = desc

    def to(self, dtype: torch.dtype) -> _Materialised:
        return _Materialised(self.desc.to(dtype))

    def at(self, points: Tensor) -> Tensor:
        return read_cells(self.desc, points).float()

    def similarity(self, queries: Tensor) -> Tensor:
        return torch.bmm(queries, self.desc.flatten(2).float()).unflatten(2, self.desc.shape[-2:])


def predict(descriptors: DescriptorFn, v: PairViews, storage: torch.dtype = torch.float32, chunk: int = 16) -> Tensor:
    """Hard nearest-neighbour positions ``(2P, K, 2)`` (x, y px) of the sources' landmarks in every target.

    Views go through the source ``chunk`` at a time, their descriptors held in ``storage`` only until their K
    rows (sources) or their K similarity rows and argmax (targets) are taken. A descriptor function with a
    ``grid`` method (:class:`~equinv.features.descriptors.SourceDescriptors`) is read factorised
    (:class:`~equinv.features.similarity.GridDescriptors`: no ``D × S²`` grid for a hypercolumn); any other
    callable's grids are materialised.
    """
    grid = getattr(descriptors, "grid", None) or (lambda x: _Materialised(descriptors(x)))
    rows = [grid(x).to(storage).at(lm) for x, lm in zip(v.src.split(chunk), v.src_lm.split(chunk), strict=True)]
    queries = torch.cat(rows).repeat_interleave(2, 0)  # (2P, K, D): A's rows, for A (same) and B (different)
    return torch.cat([argmax_points(grid(x).to(storage).similarity(q))
                      for x, q in zip(v.tgt.split(chunk), queries.split(chunk), strict=True)])


@torch.no_grad()
def match_errors(descriptor_fn: DescriptorFn, dataset, n_pairs: int = 500, seed: int = 1, batch: int = 16,
                 indices: Sequence[int] | None = None, device: str | torch.device | None = None,
                 tps: str | TPSConfig = "eval", mean=FACE_MEAN, std=FACE_STD, progress: bool = True,
                 storage: torch.dtype = torch.float32, chunk: int = 16) -> dict:
    """Mean landmark-matching errors, same and different identity (protocol §5a).

    Args:
        descriptor_fn: normalised images ``(B, 3, S, S)`` on ``device`` → descriptors ``(B, D, S, S)``
            (matching is a plain dot product: normalise inside, e.g.
            :func:`~equinv.features.descriptors.descriptor_fn`, whose factorised form is used: see :func:`predict`).
        dataset: a :class:`~equinv.data.dataset.LandmarkDataset` (canvas items; ``dataset.pre`` gives the
            final size and margin).
        n_pairs: number of (A, B) pairs; images ``2i, 2i+1`` of ``indices`` (default: dataset order).
        seed: seed of the TPS draws (pair ``i`` uses ``(seed, i)``).
        batch: pairs per step (their TPS warps are one batch).
        tps: warp preset or :class:`TPSConfig` (``TPSConfig(0, 0, 0, 0, 0)`` is the identity).
        storage: dtype descriptors are held in between the source and the similarity (float16 / bfloat16
            halve them; similarities are summed in float32 either way).
        chunk: views per call of the source (memory is bounded by ``chunk`` images' maps, not by ``n_pairs``).

    Returns:
        dict with ``match_error_same`` / ``match_error_diff`` (70-px DVE frame), ``match_error_same_px`` /
        ``match_error_diff_px`` (input pixels), ``n_pairs``, ``n_same`` / ``n_diff`` (landmarks counted).
    """
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    n_pairs = min(int(n_pairs), len(idx) // 2)
    if n_pairs < 1:
        raise ValueError("matching needs at least 2 images")
    size = dataset.pre.size
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sums = {"same": 0.0, "diff": 0.0, "same_px": 0.0, "diff_px": 0.0}
    counts = {"same": 0, "diff": 0}
    bar = tqdm(total=n_pairs, desc="match", unit="pair", disable=not progress, leave=False, dynamic_ncols=True)
    for start in range(0, n_pairs, batch):
        stop = min(n_pairs, start + batch)
        v = pair_views(dataset, idx[2 * start : 2 * stop], 2 * start, seed, tps, dev, mean, std)
        pred = predict(descriptor_fn, v, storage, chunk)
        ok = v.src_vis.repeat_interleave(2, 0) & v.tgt_vis
        d70 = (C.to_dve70(pred, size) - C.to_dve70(v.tgt_lm, size)).norm(dim=-1)
        dpx = (pred - v.tgt_lm).norm(dim=-1)
        for key, rows in (("same", slice(0, None, 2)), ("diff", slice(1, None, 2))):
            sums[key] += float(d70[rows][ok[rows]].sum())
            sums[key + "_px"] += float(dpx[rows][ok[rows]].sum())
            counts[key] += int(ok[rows].sum())
        bar.update(stop - start)
    bar.close()

    def mean_of(key: str, n: int) -> float:
        return sums[key] / n if n else float("nan")

    return {
        "match_error_same": mean_of("same", counts["same"]),
        "match_error_diff": mean_of("diff", counts["diff"]),
        "match_error_same_px": mean_of("same_px", counts["same"]),
        "match_error_diff_px": mean_of("diff_px", counts["diff"]),
        "n_pairs": n_pairs,
        "n_same": counts["same"],
        "n_diff": counts["diff"],
    }

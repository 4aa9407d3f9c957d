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
* error = Euclidean distance in the 70×70 DVE frame ``(n + 1)/2·69`` of the normalised coordinates
  ``n = 2·px/(W − 1) − 1`` (:func:`equinv.coords.to_dve70`; ``match_error_*``) and in input pixels of the
  96 frame (``match_error_*_px``);
  the mean runs over landmarks visible in source and target, over all pairs.

Deliberate differences from the reference: landmarks are moved through the warps exactly (inverse of the
sampling map, :func:`~equinv.augment.tps.warp_landmarks`) instead of KD-tree nearest pixel, and a
landmark that leaves a view or sits on a fold is left out (counts are reported). The TPS draws of pair
``i`` come from a generator seeded with ``(seed, i)``, so the numbers do not depend on ``batch``
(the reference seeds torch once and draws per batch of 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from equinv import coords as C
from equinv.augment.photometric import FACE_MEAN, FACE_STD, normalize
from equinv.augment.tps import TPSConfig, TPSParams, sample_tps, warp_images, warp_landmarks

DescriptorFn = Callable[[Tensor], Tensor]




def _pair_params(n: int, start: int, seed: int, config) -> tuple[TPSParams, TPSParams]:
    """TPS₁ and TPS₂ of images ``start .. start+n-1``, each from its own generator (batch-independent)."""
    p1, p2 = [], []
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(int(seed) * 1_000_003 + i)
        p1.append(sample_tps(1, config, g))
        p2.append(sample_tps(1, config, g))

    def cat(ps: list[TPSParams]) -> TPSParams:
        return TPSParams(*(torch.cat([getattr(p, k) for p in ps]) for k in ("centers", "kernel_weights", "affine")))

    return cat(p1), cat(p2)


def _nn_match(src: Tensor, src_lm: Tensor, tgt: Tensor) -> Tensor:
    """Hard NN: descriptors of ``src`` at rounded ``src_lm`` ``(P, K, 2)`` px vs every ``tgt`` pixel.

    Returns the argmax pixel ``(P, K, 2)`` (x, y) in the target frame.
    """
    p, d, h, w = src.shape
    ix, iy = C.nearest_pixel(src_lm, (h, w))
    flat = src.flatten(2)  # (P, D, HW)
    q = flat.gather(2, (iy * w + ix)[:, None, :].expand(-1, d, -1))  # (P, D, K)
    sim = torch.bmm(q.transpose(1, 2), tgt.flatten(2))  # (P, K, HW)
    j = sim.argmax(-1)
    return torch.stack(((j % w).float(), torch.div(j, w, rounding_mode="floor").float()), -1)


@torch.no_grad()
def match_errors(descriptor_fn: DescriptorFn, dataset, n_pairs: int = 500, seed: int = 1, batch: int = 16,
                 indices: Sequence[int] | None = None, device: str | torch.device | None = None,
                 tps: str | TPSConfig = "eval", mean=FACE_MEAN, std=FACE_STD, progress: bool = True) -> dict:
    """Mean landmark-matching errors, same and different identity (protocol §5a).

    Args:
        descriptor_fn: normalised images ``(B, 3, S, S)`` on ``device`` → descriptors ``(B, D, S, S)``
            (matching is a plain dot product: normalise inside, e.g.
            :func:`~equinv.features.descriptors.descriptor_fn`).
        dataset: a :class:`~equinv.data.dataset.LandmarkDataset` (canvas items; ``dataset.pre`` gives the
            final size and margin).
        n_pairs: number of (A, B) pairs; images ``2i, 2i+1`` of ``indices`` (default: dataset order).
        seed: seed of the TPS draws (pair ``i`` uses ``(seed, i)``).
        batch: pairs per forward pass.
        tps: warp preset or :class:`TPSConfig` (``TPSConfig(0, 0, 0, 0, 0)`` is the identity).

    Returns:
        dict with ``match_error_same`` / ``match_error_diff`` (70-px DVE frame), ``match_error_same_px`` /
        ``match_error_diff_px`` (input pixels), ``n_pairs``, ``n_same`` / ``n_diff`` (landmarks counted).
    """
    idx = list(range(len(dataset))) if indices is None else [int(i) for i in indices]
    n_pairs = min(int(n_pairs), len(idx) // 2)
    if n_pairs < 1:
        raise ValueError("matching needs at least 2 images")
    idx = idx[: 2 * n_pairs]
    pre = dataset.pre
    size, margin = pre.size, pre.margin
    dev = torch.device(device) if device is not None else torch.device("cpu")
    sums = {"same": 0.0, "diff": 0.0, "same_px": 0.0, "diff_px": 0.0}
    counts = {"same": 0, "diff": 0}
    bar = tqdm(total=n_pairs, desc="match", unit="pair", disable=not progress, leave=False, dynamic_ncols=True)
    for start in range(0, n_pairs, batch):
        stop = min(n_pairs, start + batch)
        items = dataset.__getitems__(idx[2 * start : 2 * stop])
        imgs = items["image"].to(dev).float().div_(255.0)
        lm, vis = items["landmarks"].to(dev).float(), items["visible"].to(dev)
        canvas = imgs.shape[-1]
        p1, p2 = _pair_params(imgs.shape[0], 2 * start, seed, tps)
        p1, p2 = p1.to(dev), p2.to(dev)
        view2 = warp_images(imgs, p1)  # TPS₁(I)
        view1 = warp_images(view2, p2)  # TPS₂(TPS₁(I)), the source view (only A's is used)
        lm2, ok2 = warp_landmarks(p1, lm, canvas, canvas, return_valid=True)
        lm1, ok1 = warp_landmarks(p2, lm2, canvas, canvas, return_valid=True)
        vis2, vis1 = vis & ok2, vis & ok2 & ok1
        sl = slice(margin, margin + size)
        v1 = normalize(view1[0::2, :, sl, sl], mean, std)
        v2 = normalize(view2[:, :, sl, sl], mean, std)
        lm1, lm2 = C.canvas_to_view(lm1, margin), C.canvas_to_view(lm2, margin)
        src = descriptor_fn(v1)
        tgt = descriptor_fn(v2)
        src_lm, src_vis = lm1[0::2], vis1[0::2]
        for key, t_desc, t_lm, t_vis in (("same", tgt[0::2], lm2[0::2], vis2[0::2]),
                                         ("diff", tgt[1::2], lm2[1::2], vis2[1::2])):
            pred = _nn_match(src, src_lm, t_desc)
            ok = src_vis & t_vis
            d70 = (C.to_dve70(pred, size) - C.to_dve70(t_lm, size)).norm(dim=-1)
            dpx = (pred - t_lm).norm(dim=-1)
            sums[key] += float(d70[ok].sum())
            sums[key + "_px"] += float(dpx[ok].sum())
            counts[key] += int(ok.sum())
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

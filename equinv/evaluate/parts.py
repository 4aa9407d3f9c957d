"""Parts and principal components of hypercolumns (paper §4.4 Fig. 5, Table 4 "NMF"; appendix A.1 Fig. 6).

* **NMF** (scikit-learn :class:`~sklearn.decomposition.NMF`, Frobenius loss, ``nndsvda`` init): hypercolumns
  of a frozen ResNet are non-negative (every tap follows a ReLU or a max-pool of ReLUs, and bilinear
  upsampling keeps them so), so each pixel ``x ≈ w·H`` with ``d`` non-negative components ``H``. The
  coefficients ``w`` are the "NMF-d" descriptors (Table 4) and their per-pixel argmax is a part map with one
  fixed colour per component across images (Fig. 5). New pixels are projected by non-negative least
  squares with ``H`` fixed (multiplicative updates in torch, vectorised over pixels).
* **PCA** (appendix A.1): the first components of the pixel hypercolumns; the first 3 shown as RGB. The
  paper calls its PCA *uncentred*; the released code centres (protocol.md §9): ``centered=True`` (default)
  or ``False``. Component signs are fixed (positive skew of the projections, i.e. the sparse blobs are
  bright), and the colour range is the 1st–99th percentile of the fitted pixels, so colours are the same
  across images and runs.

Both are fitted on a bounded random sample of pixels (``max_pixels``, spread evenly over the images) so
memory stays bounded whatever the number of images. Models are saved as ``.safetensors`` tensors with
their settings as JSON in the file's metadata (and a readable ``.json`` next to it); no pickle.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from equinv.errors import InputError
from equinv.features.descriptors import dense_features, descriptor_maps
from equinv.features.spec import FeatureSpec
from equinv.features.stats import prepare_input
from equinv.models.parts import PartsModel


def _hypercolumns(hypercolumn, x: Tensor, size: int, layerwise: bool) -> Tensor:
    """``(B, D, size, size)`` hypercolumns, L2-normalised per layer block when ``layerwise``."""
    return descriptor_maps(hypercolumn, x, size, True) if layerwise else dense_features(hypercolumn, x, size)

@torch.no_grad()
def sample_pixels(hypercolumn, images: Tensor, *, pre=None, stats: str = "face", size: int = 48,
                  layerwise: bool = True, max_pixels: int = 20000, seed: int = 0, batch: int = 16,
                  device=None) -> Tensor:
    """A random sample ``(≤ max_pixels, D)`` of hypercolumn pixels, evenly spread over ``images``.

    Only the sample is kept, so memory is ``max_pixels·D`` plus one batch of hypercolumns.
    """
    g = torch.Generator().manual_seed(seed)
    n = images.shape[0]
    # image i keeps max_pixels // n pixels, the first max_pixels % n one more (at most S² each)
    per = [min(size * size, max_pixels // max(n, 1) + (i < max_pixels % max(n, 1))) for i in range(n)]
    out = []
    if device is None:
        p = next(hypercolumn.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    for i in range(0, n, batch):
        x = prepare_input(images[i : i + batch], pre, stats, device)
        flat = _hypercolumns(hypercolumn, x, size, layerwise).flatten(2)  # (b, D, S²)
        for j in range(flat.shape[0]):
            idx = torch.randperm(size * size, generator=g)[: per[i + j]].to(flat.device)
            out.append(flat[j][:, idx].T.float().cpu())
    return torch.cat(out)


def _range(coeffs: Tensor) -> tuple[Tensor, Tensor]:
    q = torch.quantile(coeffs[: 200_000].float(), torch.tensor([0.01, 0.99]), dim=0)
    return q[0], q[1]


def fit_nmf(x: Tensor, dim: int = 8, seed: int = 0, max_iter: int = 300, layerwise: bool = True,
            meta: dict | None = None) -> PartsModel:
    """NMF with ``dim`` components of non-negative pixels ``(N, D)`` (scikit-learn)."""
    from sklearn.decomposition import NMF

    a = x.float().clamp_min(0).numpy().astype(np.float32)
    model = NMF(n_components=dim, init="nndsvda", max_iter=max_iter, random_state=seed)
    w = model.fit_transform(a)
    comps = torch.from_numpy(np.ascontiguousarray(model.components_, dtype=np.float32))
    lo, hi = _range(torch.from_numpy(w.astype(np.float32)))
    return PartsModel("nmf", comps, torch.zeros(a.shape[1]), torch.zeros_like(lo), hi, layerwise, False,
                      dict(meta or {}, reconstruction_err=float(model.reconstruction_err_), n_iter=int(model.n_iter_)))


def fit_pca(x: Tensor, dim: int = 3, centered: bool = True, layerwise: bool = True,
            meta: dict | None = None) -> PartsModel:
    """First ``dim`` principal directions of pixels ``(N, D)``; ``centered=False`` is the paper's uncentred PCA."""
    x = x.float()
    mean = x.mean(0) if centered else torch.zeros(x.shape[1])
    xc = x - mean
    _, s, vt = torch.linalg.svd(xc, full_matrices=False)
    comps = vt[:dim].clone()
    proj = xc @ comps.T
    skew = (proj - proj.mean(0)).pow(3).mean(0)
    sign = torch.where(skew < 0, -1.0, 1.0)
    comps, proj = comps * sign[:, None], proj * sign
    lo, hi = _range(proj)
    var = s.pow(2)
    ratio = (var[:dim] / var.sum().clamp_min(1e-12)).tolist()
    return PartsModel("pca", comps, mean, lo, hi, layerwise, centered, dict(meta or {}, energy_ratio=ratio))


def fit_parts(x: Tensor, method: str = "nmf", dim: int = 8, centered: bool = True, seed: int = 0,
              layerwise: bool = True, meta: dict | None = None) -> PartsModel:
    """Fit NMF (``dim`` parts) or PCA (``dim`` components) on pixels ``(N, D)`` (:func:`fit_nmf`, :func:`fit_pca`)."""
    if method == "nmf":
        return fit_nmf(x, dim, seed, layerwise=layerwise, meta=meta)
    if method == "pca":
        return fit_pca(x, dim, centered, layerwise=layerwise, meta=meta)
    raise ValueError(f"unknown method {method!r}; choose nmf or pca")


@torch.no_grad()
def part_coefficients(model: PartsModel, hypercolumn, images: Tensor, *, pre=None, stats: str = "face",
                      size: int = 48, batch: int = 16, device=None) -> Tensor:
    """Coefficient maps ``(B, d, S, S)`` of ``images`` (canvases cut by ``pre``) on the CPU."""
    if device is None:
        p = next(hypercolumn.parameters(), None)
        device = p.device if p is not None else torch.device("cpu")
    out = []
    for i in range(0, images.shape[0], batch):
        x = prepare_input(images[i : i + batch], pre, stats, device)
        out.append(model.transform_maps(_hypercolumns(hypercolumn, x, size, model.layerwise)).cpu())
    return torch.cat(out)


def part_labels(coeffs: Tensor) -> Tensor:
    """Argmax component per pixel ``(B, S, S)`` of coefficient maps ``(B, d, S, S)``."""
    return coeffs.argmax(1)


@dataclass
class PartsConfig:
    """What ``equinv parts`` does: see the command's ``--help``."""

    data: str
    features: FeatureSpec = FeatureSpec()
    method: str = "nmf"
    dim: int = 8
    uncentered: bool = False
    whole_norm: bool = False
    image_size: int = 96
    max_images: int | None = 64
    max_pixels: int = 20000
    n_figure: int = 8
    cell: int = 96
    cols: int = 4
    seed: int = 0
    device: str | None = None
    progress: bool = False


def run_parts(cfg: PartsConfig, out: str | Path) -> dict:
    """Fit NMF parts or PCA maps on a seeded subset of ``cfg.data``'s hypercolumn pixels; save the model
    (``out/parts.safetensors`` + ``.json``), draw the maps (``out/parts.png`` or ``out/pca.png``) and write
    ``out/summary.json``; returns the summary."""
    from equinv.data.dataset import open_dataset
    from equinv.evaluate.protocol import pick_device
    from equinv.features.sources import build_source
    from equinv.features.stats import stats_for_kind
    from equinv.records import write_json

    if cfg.dim < 1:
        raise InputError(f"--dim must be positive, got {cfg.dim}")
    out, dev = Path(out), pick_device(cfg.device)
    ds = open_dataset(cfg.data, cfg.image_size, progress=cfg.progress)
    n = len(ds) if cfg.max_images is None else min(len(ds), cfg.max_images)
    rng = np.random.default_rng(cfg.seed)
    idx = np.sort(rng.choice(len(ds), size=n, replace=False)) if n < len(ds) else np.arange(n)
    batch = ds.__getitems__(idx.tolist())
    hc = build_source(cfg.features.with_defaults(grid=48), dev)
    spec = hc.spec
    if spec.source != "hypercolumn":
        raise InputError(f"parts are fitted on hypercolumns, not on a {spec.source} source")
    stats = spec.stats or stats_for_kind(ds.index.kind)
    layerwise = not cfg.whole_norm
    x = sample_pixels(hc, batch["image"], pre=ds.pre, stats=stats, size=spec.grid, layerwise=layerwise,
                      max_pixels=cfg.max_pixels, seed=cfg.seed, device=dev)
    meta = {"arch": spec.arch, "backbone": spec.backbone, "layer": spec.layers, "taps": list(hc.taps),
            "channels": list(hc.channels), "grid": spec.grid, "stats": stats, "data": cfg.data, "n_images": int(n),
            "n_pixels": int(x.shape[0]), "seed": cfg.seed, "features": spec.as_dict()}
    model = fit_parts(x, cfg.method, cfg.dim, centered=not cfg.uncentered, seed=cfg.seed, layerwise=layerwise,
                      meta=meta)
    path = model.save(out / "parts.safetensors")
    fig = _draw_parts(cfg, out, model, hc, batch["image"][: min(n, cfg.n_figure)], ds.pre, stats, spec.grid, dev)
    info = {"model": str(path), "figure": str(fig), **model.settings()}
    write_json(out / "summary.json", info, indent=1)
    return info


def _draw_parts(cfg: PartsConfig, out: Path, model: PartsModel, hc, images: Tensor, pre, stats: str, grid: int,
                dev) -> Path:
    """The part map figure (NMF: argmax part per pixel) or the PCA figure of ``images``."""
    from equinv.viz.maps import parts_figure, pca_figure

    coeffs = part_coefficients(model.to(dev), hc, images, pre=pre, stats=stats, size=grid, device=dev)
    m, s = pre.margin, pre.size
    views = images[:, :, m : m + s, m : m + s]
    if cfg.method == "pca":
        return pca_figure(views, model.scaled(coeffs)[:, :3], out / "pca.png", cell=cfg.cell)
    return parts_figure(views, part_labels(coeffs), out / "parts.png", cell=cfg.cell, cols=cfg.cols,
                        strength=model.scaled(coeffs).amax(1))

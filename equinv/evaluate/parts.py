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

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from equinv.evaluate.descriptors import layerwise_normalize, prepare_input, raw_hypercolumn

METHODS = ("nmf", "pca")


@dataclass
class PartsModel:
    """A fitted NMF or PCA basis over hypercolumn pixels.

    Attributes:
        method: ``nmf`` or ``pca``.
        components: ``(d, D)`` basis (non-negative for NMF; orthonormal rows for PCA).
        mean: ``(D,)`` subtracted before projecting (zeros for NMF and uncentred PCA).
        lo, hi: ``(d,)`` colour range of each coefficient (1st / 99th percentile on the fitted pixels).
        layerwise: hypercolumns were L2-normalised per layer block before fitting.
        centered: PCA only.
        meta: free-form settings (arch, taps, size, stats, backbone, ...), saved as JSON.
    """

    method: str
    components: Tensor
    mean: Tensor
    lo: Tensor
    hi: Tensor
    layerwise: bool = True
    centered: bool = True
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.components.shape[0])

    def to(self, device) -> PartsModel:
        for name in ("components", "mean", "lo", "hi"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    # -- projection ---------------------------------------------------------------------------------
    def transform(self, x: Tensor, iters: int = 100) -> Tensor:
        """Pixels ``(N, D)`` → coefficients ``(N, d)``."""
        c = self.components.to(x.device, torch.float32)
        x = x.float()
        if self.method == "pca":
            return (x - self.mean.to(x.device)) @ c.T
        return nnls_coefficients(x.clamp_min(0), c, iters)

    def transform_maps(self, h: Tensor, iters: int = 100) -> Tensor:
        """Hypercolumns ``(B, D, S, S)`` (normalised as at fit time) → ``(B, d, S, S)``."""
        b, dd, s1, s2 = h.shape
        y = self.transform(h.permute(0, 2, 3, 1).reshape(-1, dd), iters)
        return y.reshape(b, s1, s2, -1).permute(0, 3, 1, 2).contiguous()

    def scaled(self, coeffs: Tensor) -> Tensor:
        """Coefficients ``(B, d, S, S)`` → [0, 1] with the fitted per-component colour range."""
        lo = self.lo.to(coeffs.device)[None, :, None, None]
        hi = self.hi.to(coeffs.device)[None, :, None, None]
        return ((coeffs - lo) / (hi - lo).clamp_min(1e-12)).clamp(0, 1)

    # -- persistence --------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"method": self.method, "dim": self.dim, "layerwise": self.layerwise, "centered": self.centered,
                "in_dim": int(self.components.shape[1]), **self.meta}

    def save(self, path: str | Path) -> Path:
        """Write ``path`` (``.safetensors``) and a readable ``.json`` next to it."""
        p = Path(path)
        if p.suffix != ".safetensors":
            p = p.with_suffix(".safetensors")
        p.parent.mkdir(parents=True, exist_ok=True)
        tensors = {k: getattr(self, k).detach().float().cpu().contiguous() for k in ("components", "mean", "lo", "hi")}
        info = self.settings()
        save_file(tensors, str(p), metadata={"equinv_parts": json.dumps(info)})
        p.with_suffix(".json").write_text(json.dumps(info, indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> PartsModel:
        from equinv.errors import InputError

        p = Path(path)
        if p.is_dir():
            p = p / "parts.safetensors"
        if not p.exists():
            raise InputError("no such parts model", p)
        from safetensors import safe_open

        with safe_open(str(p), framework="pt") as f:
            md = f.metadata() or {}
        if "equinv_parts" not in md:
            raise InputError("not an equinv parts model (no equinv_parts metadata)", p)
        info = json.loads(md["equinv_parts"])
        t = load_file(str(p))
        meta = {k: v for k, v in info.items() if k not in ("method", "dim", "layerwise", "centered", "in_dim")}
        return cls(info["method"], t["components"], t["mean"], t["lo"], t["hi"], bool(info["layerwise"]),
                   bool(info["centered"]), meta)


def nnls_coefficients(x: Tensor, h: Tensor, iters: int = 100, eps: float = 1e-10) -> Tensor:
    """``argmin_{w ≥ 0} |x − w·h|²`` for every row of ``x`` ``(N, D)`` with ``h`` ``(d, D)`` fixed.

    Multiplicative updates (Lee & Seung) from a clipped least-squares start; ``h`` and ``x`` non-negative.
    """
    hht = h @ h.T  # (d, d)
    xht = x @ h.T  # (N, d)
    w = (xht @ torch.linalg.pinv(hht)).clamp_min(0) + 1e-4
    for _ in range(iters):
        w = w * xht / (w @ hht + eps)
    return w


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
        h = raw_hypercolumn(hypercolumn, x, size)
        if layerwise:
            h = layerwise_normalize(h, hypercolumn.channels)
        flat = h.flatten(2)  # (b, D, S²)
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
        h = raw_hypercolumn(hypercolumn, x, size)
        if model.layerwise:
            h = layerwise_normalize(h, hypercolumn.channels)
        out.append(model.transform_maps(h).cpu())
    return torch.cat(out)


def part_labels(coeffs: Tensor) -> Tensor:
    """Argmax component per pixel ``(B, S, S)`` of coefficient maps ``(B, d, S, S)``."""
    return coeffs.argmax(1)

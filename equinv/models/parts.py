"""A fitted NMF or PCA basis over hypercolumn pixels (paper §4.4 Fig. 5, Table 4 "NMF"; appendix A.1).

The model only: projection of new pixels (non-negative least squares for NMF, a linear map for PCA), colour
scaling and safetensors persistence. Fitting lives in :mod:`equinv.evaluate.parts`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file
from torch import Tensor

from equinv.errors import InputError
from equinv.outputs import write_text
from equinv.safefile import write_safetensors

METHODS = ("nmf", "pca")
#: The tensors of a parts model, as saved.
TENSORS = ("components", "mean", "lo", "hi")


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
        write_safetensors(p, tensors, metadata={"equinv_parts": json.dumps(info)})
        write_text(p.with_suffix(".json"), json.dumps(info, indent=2) + "\n")
        return p

    @classmethod
    def load(cls, path: str | Path) -> PartsModel:
        p = Path(path)
        if p.is_dir():
            p = p / "parts.safetensors"
        if not p.exists():
            raise InputError("no such parts model", p)
        try:
            with safe_open(str(p), framework="pt") as f:
                md = f.metadata() or {}
            t = load_file(str(p))
        except Exception as e:  # safetensors raises its own error types for a bad header
            raise InputError(f"not a readable safetensors file ({e})", p) from None
        if "equinv_parts" not in md:
            raise InputError("not an equinv parts model (no equinv_parts metadata)", p)
        try:
            info = json.loads(md["equinv_parts"])
            missing = [k for k in TENSORS if k not in t]
            if missing:
                raise ValueError(f"missing tensors {missing}")
            meta = {k: v for k, v in info.items() if k not in ("method", "dim", "layerwise", "centered", "in_dim")}
            return cls(info["method"], t["components"], t["mean"], t["lo"], t["hi"], bool(info["layerwise"]),
                       bool(info["centered"]), meta)
        except (ValueError, KeyError, TypeError) as e:
            raise InputError(f"malformed equinv parts model ({e})", p) from None


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

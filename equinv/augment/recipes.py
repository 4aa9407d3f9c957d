"""View pipelines (MoCo views and their variants) as data: a :class:`ViewConfig` plus :func:`make_view`.

Reference face chain (protocol §1, CL ``data_loaders_face.py``), on the 136-px canvas:
JPEG noise → RandomResizedCrop(136, scale .2–1) → ColorJitter(.4, .4, .4, hue 0) → ToTensor →
PCA lighting → Normalize(face stats) → slice 20 px per side → 96². Birds: 96 canvas, RRC(96), ImageNet
stats, no slice. The optional extras (off in the reference) slot in as: resize to canvas → [TPS] → JPEG →
RRC → [h-flip] → jitter → [grayscale] → PCA → normalise → slice.

Input: uint8 (or [0, 1] float) ``(B, 3, H, W)`` on any device, landmarks ``(B, K, 2)`` pixels, visible
``(B, K)``. Output: normalised float views at ``final`` size with landmarks in that frame.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple

import torch

from equinv.augment import geometric as G
from equinv.augment import photometric as P
from equinv.augment import tps as T


@dataclass(frozen=True)
class ViewConfig:
    """One view chain. Sizes in pixels; set a probability/strength to 0 (or ``None``) to switch a step off."""

    canvas: int = 136
    final: int = 96
    jpeg: bool = True
    rrc: bool = True
    rrc_scale: tuple[float, float] = (0.2, 1.0)
    rrc_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    jitter: tuple[float, float, float] = (0.4, 0.4, 0.4)  # brightness, contrast, saturation (hue 0)
    pca_std: float = 0.1
    mean: tuple[float, float, float] = P.FACE_MEAN
    std: tuple[float, float, float] = P.FACE_STD
    tps: str | None = None  # a preset name of equinv.augment.tps.PRESETS
    tps_strength: float = 1.0
    hflip_p: float = 0.0
    flip_perm: tuple[int, ...] | None = None
    grayscale_p: float = 0.0

    @property
    def margin(self) -> int:
        """Pixels sliced per side after normalising (20 for 136 → 96)."""
        return (self.canvas - self.final) // 2


def face_moco(canvas: int = 136, final: int = 96, **overrides) -> ViewConfig:
    """Protocol §1 face chain (136 canvas, 20-px slice → 96)."""
    return replace(ViewConfig(canvas=canvas, final=final), **overrides)


def bird_moco(canvas: int = 96, final: int = 96, **overrides) -> ViewConfig:
    """Protocol §1 bird chain: 96 canvas, RRC(96), ImageNet statistics, no slice."""
    cfg = ViewConfig(canvas=canvas, final=final, mean=P.IMAGENET_MEAN, std=P.IMAGENET_STD)
    return replace(cfg, **overrides)


PRESETS = {"face_moco": face_moco, "bird_moco": bird_moco}


class View(NamedTuple):
    images: torch.Tensor  # (B, 3, final, final) normalised
    landmarks: torch.Tensor  # (B, K, 2) pixels in the final frame
    visible: torch.Tensor  # (B, K) bool, as given (invisible only where a flip/TPS says so)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1]; float input is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


def make_view(images: torch.Tensor, landmarks: torch.Tensor | None, visible: torch.Tensor | None,
              cfg: ViewConfig, generator: torch.Generator | None = None) -> View:
    """Run the chain of ``cfg`` once (all random draws from ``generator``, vectorised over the batch)."""
    x = to_float(images)
    b, dev = x.shape[0], x.device
    if landmarks is None:
        landmarks = torch.zeros(b, 0, 2, device=dev)
    if visible is None:
        visible = torch.ones(landmarks.shape[:2], dtype=torch.bool, device=landmarks.device)
    lm, vis = landmarks.float(), visible
    x, lm, vis = G.resize(x, lm, vis, cfg.canvas)
    if cfg.tps:
        x, lm, vis = T.random_tps(x, lm, vis, cfg.tps, generator, cfg.tps_strength)
    if cfg.jpeg:
        x = P.apply_jpeg(x, P.sample_jpeg(b, cfg.canvas, generator))
    if cfg.rrc:
        boxes = G.sample_rrc(b, cfg.canvas, cfg.canvas, generator, cfg.rrc_scale, cfg.rrc_ratio)
        x, lm, vis = G.apply_rrc(x, lm, vis, boxes, cfg.canvas)
    if cfg.hflip_p > 0:
        x, lm, vis = G.random_hflip(x, lm, vis, cfg.hflip_p, cfg.flip_perm, generator)
    if any(j > 0 for j in cfg.jitter):
        x = P.apply_jitter(x, P.sample_jitter(b, *cfg.jitter, generator=generator))
    if cfg.grayscale_p > 0:
        x = P.apply_grayscale(x, P.sample_grayscale(b, cfg.grayscale_p, generator))
    if cfg.pca_std > 0:
        x = P.apply_pca_lighting(x, P.sample_pca_lighting(b, cfg.pca_std, generator))
    x = P.normalize(x, cfg.mean, cfg.std)
    if cfg.margin > 0 or cfg.final != cfg.canvas:
        x, lm, vis = G.center_crop(x, lm, vis, cfg.final)
    return View(x, lm, vis)


def two_views(images, landmarks=None, visible=None, cfg: ViewConfig | None = None,
              generator: torch.Generator | None = None,
              cfg_key: ViewConfig | None = None) -> tuple[View, View]:
    """Two independent draws of the chain (query, key) for MoCo; ``cfg_key`` defaults to ``cfg``."""
    cfg = cfg or face_moco()
    return (make_view(images, landmarks, visible, cfg, generator),
            make_view(images, landmarks, visible, cfg_key or cfg, generator))


def flip_perm_from_names(names: Sequence[str]) -> tuple[int, ...]:
    """A ``flip_perm`` from landmark names: swaps ``left``/``right`` (case-insensitive) name pairs."""
    lower = [n.lower() for n in names]
    index = {n: i for i, n in enumerate(lower)}
    perm = []
    for i, n in enumerate(lower):
        if "left" in n:
            other = n.replace("left", "right")
        elif "right" in n:
            other = n.replace("right", "left")
        else:
            other = n
        perm.append(index.get(other, i))
    return tuple(perm)

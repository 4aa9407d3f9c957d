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
from functools import lru_cache
from typing import NamedTuple

import torch

from equinv import coords as C
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
    mean_stride: int = 4  # contrast mean: the sliced-off margin seen through a stride-s subsample (1: exact)

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
    """One augmented view: images ``(B, 3, S, S)`` normalised, landmarks ``(B, K, 2)`` pixels, visible ``(B, K)``."""
    images: torch.Tensor  # (B, 3, final, final) normalised
    landmarks: torch.Tensor  # (B, K, 2) pixels in the final frame
    visible: torch.Tensor  # (B, K) bool, as given (invisible only where a flip/TPS says so)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 → float32 in [0, 1]; float input is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images


@lru_cache(maxsize=16)
def _layout(canvas: int, final: int, stride: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Output pixels a view renders: ``(P, 2)`` points (x, y) and ``(P,)`` weights for the canvas mean.

    The first ``final²`` points are the kept centre (row-major, weight 1, exactly the pixels
    :func:`~equinv.augment.geometric.center_crop` keeps); then one point per ``≤ stride × stride`` cell of
    the sliced-off margin, at the cell's centre, weighted by its pixel count (weights sum to ``canvas²``).
    """
    t = (canvas - final) // 2

    def segments(lo: int, hi: int) -> list[tuple[int, int]]:
        return [(a, min(a + stride, hi)) for a in range(lo, hi, stride)]

    axis = segments(0, t) + segments(t, t + final) + segments(t + final, canvas)
    cells, weights = [], []
    for ya, yb in axis:
        for xa, xb in axis:
            if t <= ya and yb <= t + final and t <= xa and xb <= t + final:
                continue  # inside the centre: rendered pixel by pixel
            cells.append(((xa + xb - 1) / 2, (ya + yb - 1) / 2))
            weights.append((yb - ya) * (xb - xa))
    centre = G.pixel_grid(final, final).reshape(-1, 2) + t
    pts = torch.cat((centre, torch.tensor(cells, dtype=torch.float32).reshape(-1, 2)))
    w = torch.cat((torch.ones(final * final), torch.tensor(weights, dtype=torch.float32)))
    return pts, w


def make_view(images: torch.Tensor, landmarks: torch.Tensor | None, visible: torch.Tensor | None,
              cfg: ViewConfig, generator: torch.Generator | None = None) -> View:
    """Run the chain of ``cfg`` once (all random draws from ``generator``, vectorised over the batch).

    The draws come in chain order (TPS, JPEG, RRC, flip, jitter, grayscale, PCA), then the pixels are made
    in one pass that renders only what survives the final slice:

    - JPEG noise in runs of equal ``r`` (:func:`~equinv.augment.photometric.jpeg_sorted`, 0–255 scale;
      the batch stays sorted by ``r`` until the end);
    - RRC (and the flip, folded into its matrix) sampled with one ``grid_sample`` at the ``final²`` centre
      pixels plus one point per ``mean_stride²`` cell of the sliced-off margin (:func:`_layout`);
    - each jitter step one colour matrix per sample (``clamp(M x + o)``, the 1/255 folded into the first);
      grayscale, PCA lighting and normalisation one more per-sample affine, on the centre only.

    Pixels equal those of the op-by-op chain (full canvas → slice) up to float rounding, except for the
    **contrast mean**: the reference takes the mean luma over the whole canvas (after the preceding jitter
    steps and their clamps); here the centre contributes exactly and the margin through its cell points,
    each standing for its cell. With ``mean_stride=4`` (default, +6 % points for the 136 → 96 face view)
    the mean differs by ~1e-4 on face images, i.e. a pixel by ``|1 − f|·Δm ≤ 0.4·Δm`` (≪ 1/255);
    ``mean_stride=1`` renders every margin pixel and is exact. Without a slice there is no margin.
    """
    b, dev = images.shape[0], images.device
    if landmarks is None:
        landmarks = torch.zeros(b, 0, 2, device=dev)
    if visible is None:
        visible = torch.ones(landmarks.shape[:2], dtype=torch.bool, device=landmarks.device)
    lm, vis = landmarks.float(), visible
    x = images
    if x.shape[-2:] != (cfg.canvas, cfg.canvas):
        x, lm, vis = G.resize(to_float(x), lm, vis, cfg.canvas)
    if cfg.tps:
        x, lm, vis = T.random_tps(to_float(x), lm, vis, cfg.tps, generator, cfg.tps_strength)
    n = cfg.canvas
    jpeg = P.sample_jpeg(b, n, generator) if cfg.jpeg else None
    boxes = (G.sample_rrc(b, n, n, generator, cfg.rrc_scale, cfg.rrc_ratio) if cfg.rrc
             else torch.tensor([[0, 0, n, n]]).expand(b, 4))
    flips = G.sample_hflip(b, cfg.hflip_p, generator) if cfg.hflip_p > 0 else None
    jit = P.sample_jitter(b, *cfg.jitter, generator=generator) if any(j > 0 for j in cfg.jitter) else None
    gray = P.sample_grayscale(b, cfg.grayscale_p, generator) if cfg.grayscale_p > 0 else None
    pca = P.sample_pca_lighting(b, cfg.pca_std, generator) if cfg.pca_std > 0 else torch.zeros(b, 3)

    # landmarks, in the batch order
    m = G.crop_resize_matrix(boxes, (n, n))
    lm = G.transform_landmarks(m, lm)
    if flips is not None:
        lm, vis = G.hflip_landmarks(lm, vis, flips, n, cfg.flip_perm)
        mirror = torch.tensor([[-1.0, 0.0, C.hflip_x(0.0, n)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        m = torch.where(flips[:, None, None], m @ mirror, m)
    t = (n - cfg.final) // 2
    lm = C.canvas_to_view(lm, t)

    # pixels, in the order of the JPEG runs
    unit = 1.0 if x.is_floating_point() else 1 / 255.0
    if jpeg is not None:
        x, perm = P.jpeg_sorted(x, jpeg, 255.0 if x.is_floating_point() else 1.0)
        unit = 1 / 255.0
    else:
        perm = torch.arange(b)
    pts, wts = _layout(n, cfg.final, max(1, int(cfg.mean_stride)))
    px = G.sample_points(x, m[perm], pts)  # (B, 3, P)
    wts = wts.to(px.device) / (n * n)
    if jit is not None:
        jit = P.JitterParams(jit.brightness[perm], jit.contrast[perm], jit.saturation[perm], jit.order[perm])
        for step in range(3):
            mean = px @ wts if P.needs_mean(jit, step) else None
            px = P.affine_colour(px, *P.jitter_step(jit, step, mean, unit))
            unit = 1.0
    mix = torch.eye(3).expand(b, 3, 3)
    if gray is not None:
        luma = torch.tensor(P.GRAY).expand(3, 3)
        mix = torch.where(gray[perm, None, None], luma, mix)
    std = torch.tensor(cfg.std, dtype=torch.float32)
    mix = mix * (unit / std)[None, :, None]
    off = ((pca[perm].float() - torch.tensor(cfg.mean)) / std)[:, :, None]
    k = cfg.final * cfg.final
    out = P.affine_colour(px[:, :, :k], mix, off, clamp=False)
    out = out.index_select(0, torch.argsort(perm).to(out.device))
    return View(out.reshape(b, 3, cfg.final, cfg.final), lm, vis)


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

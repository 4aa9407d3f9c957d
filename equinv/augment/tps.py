"""Thin-plate-spline warps with exact landmark transport (kornia TPS + a vectorised inverse).

What the reference does (DVE ``utils/tps.py``, CL/CL2 ``utils/tps.py``; ``Warper``/``WarperSingle``):

* the frame is normalised with ``align_corners=True`` (``n = 2p/(W-1) - 1``, x by W, y by H:
  :func:`equinv.coords.points_to_norm`), the
  10×10 control points are ``linspace(-1, 1, 10)`` in that frame;
* the random "weights" are **TPS coefficients, not control-point displacements**: the sampling map is
  ``g(u) = Σ_i w_i·U(|u - c_i|²) + t + A u`` with ``U(D) = D·log(D + 1e-5)``, no side conditions on
  ``w``; ``w_i ~ N(0, sd_all²)``, then a random half of the ``(N, 2)`` entries is redrawn with
  ``sd_subset`` (with ``sd_subset = 0``, as in ``WarperSingle``, that half becomes 0);
  ``A = s·[[cos r, sin r], [-sin r, cos r]]`` acting as ``x' = s(cos r·x + sin r·y) + tx``,
  ``y' = s(-sin r·x + cos r·y) + ty``, with ``s = 1 + N(0, scalesd²)``, ``r ~ N(0, rotsd²)`` degrees,
  ``t ~ N(0, transsd²)``;
* the image is ``grid_sample(I, g)`` (pixel ``u`` of the output samples the source at ``g(u)``), and
  keypoints move by nearest neighbour of the warped grid (KD-tree), i.e. ±0.5 px quantised.

equinv reproduces the same map in kornia's TPS parameterisation: ``kernel_weights = 2·w`` because
kornia's kernel is ``½ D log D`` (the ``1e-5`` inside the reference's log moves the map by ~1e-5
normalised units, < 0.001 px), ``affine_weights`` = the reference's 3×2 affine block verbatim, the control
points as kernel centres, ``align_corners=True``. So ``kornia.geometry.transform.warp_image_tps(I, c, kw, aff,
align_corners=True)`` gives the warped image and ``warp_points_tps`` at pixel centres is its sampling map
(pitfalls.md item 4). :func:`warp_images` / :func:`sampling_map` evaluate the same formula with one shared
``(H·W, N)`` kernel matrix (kornia broadcasts ``(B, H·W, N, 2)``, GBs at 256×136²); tests check both
against kornia.

Deliberate differences: landmarks are moved by **inverting** the sampling map (nearest point of a coarse
warped grid, then damped Newton steps with the analytic Jacobian of the same formula), so they land on the
dot to ~1e-6 px instead of the reference's nearest-pixel quantisation; landmarks that no output pixel
samples, or that sit on a fold of the map (the presets do fold now and then: ``dve`` in ~3 % of draws),
are flagged. In pairs, TPS₂ is at full strength with TPS₁ at ``im1_multiplier`` (TPS
part) / ``im1_multiplier_aff`` (affine part), as CL2's and DVE HEAD's ``Warper`` (an older DVE version
scaled TPS₂ by ``im1_multiplier`` too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from kornia.geometry import create_meshgrid

from equinv import coords as C
from equinv.augment.geometric import pixel_grid


@dataclass(frozen=True)
class TPSConfig:
    """Reference ``Warper`` parameters (SDs in the normalised ``[-1, 1]`` frame; ``rotsd`` in degrees)."""

    warpsd_all: float
    warpsd_subset: float
    transsd: float
    scalesd: float
    rotsd: float
    grid: int = 10


#: Named presets. ``paper``/``cl``: CL ``WarperSingle`` (regression TPS augmentation, §4);
#: ``eval``: the matching-evaluation warps (§5a); ``dve``: DVE ``Warper`` defaults (§7).
PRESETS: dict[str, TPSConfig] = {
    "paper": TPSConfig(5e-4, 0.0, 0.02, 0.02, 2.0),
    "cl": TPSConfig(5e-4, 0.0, 0.02, 0.02, 2.0),
    "eval": TPSConfig(5e-4, 5e-3, 0.05, 0.05, 2.5),
    "dve": TPSConfig(1e-3, 1e-2, 0.1, 0.1, 5.0),
}


def get_config(config: str | TPSConfig) -> TPSConfig:
    """A :class:`TPSConfig` from a preset name (``paper``, ``eval``, ``dve``) or as given."""
    if isinstance(config, TPSConfig):
        return config
    if config not in PRESETS:
        raise ValueError(f"unknown TPS preset {config!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[config]


def scaled(config: str | TPSConfig, factor: float) -> TPSConfig:
    """A preset with every standard deviation multiplied by ``factor`` (e.g. strong warps for tests)."""
    c = get_config(config)
    return replace(c, warpsd_all=c.warpsd_all * factor, warpsd_subset=c.warpsd_subset * factor,
                   transsd=c.transsd * factor, scalesd=c.scalesd * factor, rotsd=c.rotsd * factor)


@dataclass
class TPSParams:
    """A batch of TPS sampling maps in kornia's parameterisation (normalised, ``align_corners=True``).

    centers ``(B, N, 2)``, kernel_weights ``(B, N, 2)``, affine ``(B, 3, 2)``.
    """

    centers: torch.Tensor
    kernel_weights: torch.Tensor
    affine: torch.Tensor

    def to(self, device=None, dtype=None) -> TPSParams:
        return TPSParams(*(t.to(device=device, dtype=dtype) for t in
                           (self.centers, self.kernel_weights, self.affine)))

    @property
    def batch(self) -> int:
        return self.centers.shape[0]


def control_points(n: int = 10) -> torch.Tensor:
    """``(n·n, 2)`` control points ``linspace(-1, 1, n)``, x fastest (the reference's ``tps_grid``)."""
    v = torch.linspace(-1.0, 1.0, n)
    yy, xx = torch.meshgrid(v, v, indexing="ij")
    return torch.stack((xx.reshape(-1), yy.reshape(-1)), 1)


def sample_tps(batch: int, config: str | TPSConfig = "paper", generator: torch.Generator | None = None,
               strength: float = 1.0, aff_strength: float | None = None) -> TPSParams:
    """Random TPS maps, the reference's ``random_tps_weights`` vectorised (float64, on CPU).

    ``strength`` multiplies the TPS coefficient SDs, ``aff_strength`` (default = ``strength``) the
    affine SDs: DVE's ``im1_multiplier`` / ``im1_multiplier_aff``.
    """
    c = get_config(config)
    a = strength
    b = strength if aff_strength is None else aff_strength
    n = c.grid * c.grid
    g = generator
    w = torch.randn(batch, n, 2, generator=g, dtype=torch.float64) * (a * c.warpsd_all)
    subset = torch.rand(batch, n, 2, generator=g, dtype=torch.float64) > 0.5
    redraw = torch.randn(batch, n, 2, generator=g, dtype=torch.float64) * (a * c.warpsd_subset)
    w = torch.where(subset, redraw, w)
    z = torch.randn(batch, 4, generator=g, dtype=torch.float64)
    rot = z[:, 0] * (b * c.rotsd) * math.pi / 180
    sc = 1.0 + z[:, 1] * (b * c.scalesd)
    tx, ty = z[:, 2] * (b * c.transsd), z[:, 3] * (b * c.transsd)
    aff = torch.stack((torch.stack((tx, ty), 1),
                       torch.stack((sc * torch.cos(rot), -sc * torch.sin(rot)), 1),
                       torch.stack((sc * torch.sin(rot), sc * torch.cos(rot)), 1)), 1)
    centers = control_points(c.grid).to(torch.float64).expand(batch, -1, -1).contiguous()
    return TPSParams(centers, 2.0 * w, aff)


def identity_tps(batch: int, grid: int = 10) -> TPSParams:
    """The identity map in the same parameterisation."""
    aff = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], dtype=torch.float64).expand(batch, 3, 2)
    centers = control_points(grid).to(torch.float64).expand(batch, -1, -1)
    return TPSParams(centers.contiguous(), torch.zeros(batch, grid * grid, 2, dtype=torch.float64),
                     aff.contiguous())


# ----------------------------------------------------------------------------- applying
def _kernel(sq: torch.Tensor) -> torch.Tensor:
    """kornia's TPS kernel ``½ D log D`` of squared distances (0 at D = 0)."""
    return 0.5 * sq * torch.where(sq > 0, sq, torch.ones_like(sq)).log()


def _eval_normalized(p: TPSParams, pts: torch.Tensor) -> torch.Tensor:
    """``warp_points_tps`` by matmul: pts ``(M, 2)`` shared by the batch or ``(B, M, 2)`` → ``(B, M, 2)``.

    Same formula as kornia (``Σ w_i ½D_i log D_i + a_0 + pts·A``) but the kernel matrix is ``(M, N)``
    when the points are shared, instead of kornia's ``(B, M, N, 2)`` broadcast (GBs at 256×136²).
    All rows of ``p.centers`` must hold the same control points (they always do here).
    """
    c = p.centers[0]
    k = _kernel(((pts[..., :, None, :] - c) ** 2).sum(-1))
    lin = pts @ p.affine[:, 1:] if pts.dim() == 2 else torch.bmm(pts, p.affine[:, 1:])
    return torch.matmul(k, p.kernel_weights) + lin + p.affine[:, None, 0]


def map_points(params: TPSParams, points: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The sampling map at **pixel** points ``(B, M, 2)`` or shared ``(M, 2)`` → source pixels ``(B, M, 2)``.

    Equals ``kornia.geometry.transform.warp_points_tps`` in the normalised frame (tested).
    """
    p = params.to(points.device, points.dtype)
    n = _eval_normalized(p, C.points_to_norm(points, (height, width), align_corners=True))
    return C.points_from_norm(n, (height, width), align_corners=True)


def sampling_map(params: TPSParams, height: int, width: int, normalized: bool = False,
                 device=None, dtype=torch.float32) -> torch.Tensor:
    """Dense ``(B, H, W, 2)`` map: pixel ``u`` (x, y) of the warped image samples the source at ``map[u]``.

    In source pixels by default, or in the normalised ``align_corners=True`` frame (``normalized=True``),
    i.e. exactly the grid that :func:`warp_images` (and kornia's ``warp_image_tps``) gives ``grid_sample``.
    """
    p = params.to(device, dtype)
    coords = create_meshgrid(height, width, True, device=device, dtype=dtype, align_corners=True)
    s = _eval_normalized(p, coords.reshape(-1, 2)).reshape(-1, height, width, 2)
    return s if normalized else C.points_from_norm(s, (height, width), align_corners=True)


def warp_images(images: torch.Tensor, params: TPSParams, padding_mode: str = "zeros") -> torch.Tensor:
    """``(B, C, H, W)`` → warped images; pixel ``u`` samples the source at :func:`sampling_map` ``(u)``.

    Identical to ``warp_image_tps(images, centers, kernel_weights, affine, align_corners=True)`` (tested),
    computed with a shared kernel matrix to stay fast at training batch sizes.
    """
    h, w = images.shape[-2:]
    grid = sampling_map(params, h, w, normalized=True, device=images.device, dtype=images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding_mode, align_corners=True)


def _eval_jac(p: TPSParams, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Map and its analytic Jacobian at normalised points ``(B, M, 2)``: ``(B, M, 2)``, ``(B, M, 2, 2)``.

    ``∂/∂u_l ½D log D = (log D + 1)(u_l - c_l)``; ``J[..., j, l] = ∂ out_j / ∂ u_l``.
    """
    diff = u[:, :, None, :] - p.centers[:, None]  # (B, M, N, 2)
    sq = (diff**2).sum(-1)
    pos = sq > 0
    logd = torch.where(pos, sq, torch.ones_like(sq)).log()
    val = torch.einsum("bmi,bij->bmj", 0.5 * sq * logd, p.kernel_weights)
    val = val + torch.bmm(u, p.affine[:, 1:]) + p.affine[:, None, 0]
    g = torch.where(pos, logd + 1.0, torch.zeros_like(sq))
    jac = torch.einsum("bmi,bmil,bij->bmjl", g, diff, p.kernel_weights)
    return val, jac + p.affine[:, None, 1:].transpose(-1, -2)


def _newton(p: TPSParams, target: torch.Tensor, u: torch.Tensor, height: int, width: int,
            steps: int, max_step_px: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Damped Newton for ``map(u) = target`` (pixels, ``(B, M, 2)``); best iterate and its residual (px)."""
    half = torch.tensor([C.norm_scale(width, True), C.norm_scale(height, True)], device=u.device, dtype=u.dtype)
    t = C.points_to_norm(target, (height, width), align_corners=True)
    un = C.points_to_norm(u, (height, width), align_corners=True)
    max_step = max_step_px / float(half.max())
    best, best_err = un, None
    for it in range(steps + 1):
        val, jac = _eval_jac(p, un)
        r = val - t
        err = (r * half).norm(dim=-1)
        if best_err is None:
            best_err = err
        better = err < best_err
        best = torch.where(better[..., None], un, best)
        best_err = torch.where(better, err, best_err)
        if it == steps or bool(best_err.max() < 1e-7):
            break
        a, b_, c, d = jac[..., 0, 0], jac[..., 0, 1], jac[..., 1, 0], jac[..., 1, 1]
        det = a * d - b_ * c
        det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
        step = torch.stack(((d * r[..., 0] - b_ * r[..., 1]) / det,
                            (-c * r[..., 0] + a * r[..., 1]) / det), -1)
        norm = step.norm(dim=-1, keepdim=True)
        un = un - step * torch.clamp(max_step / norm.clamp_min(1e-12), max=1.0)  # trust region near folds
    return C.points_from_norm(best, (height, width), align_corners=True), best_err


def _nearest(mapped: torch.Tensor, grid: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    idx = torch.cdist(target, mapped).argmin(-1)
    return grid.gather(1, idx[..., None].expand(-1, -1, 2)).clone()


def warp_landmarks(params: TPSParams, landmarks: torch.Tensor, height: int, width: int,
                   newton_steps: int = 8, coarse: int = 48, tol: float = 0.01,
                   return_valid: bool = False, lost_px: float = 0.1):
    """Move source landmarks ``(B, K, 2)`` into the warped image: solve ``map(u) = p`` for ``u``.

    Start at the nearest point of the sampling map on a ≤ ``coarse``² sub-grid of pixel centres, then
    damped Newton steps with a central-difference Jacobian (float64 except on MPS). Points still off by
    more than ``tol`` px restart from the nearest point of the full-resolution map. Pre-images outside
    the image are extrapolated (not clipped).

    Returns ``(B, K, 2)``; with ``return_valid`` also a ``(B, K)`` bool that is False where the point has
    no well-defined position in the warped image: the residual ``|map(u) - p|`` is ≥ ``lost_px`` (no pixel
    samples it: it left the view) or the map folds there (``det J ≤ 0``: the dot appears as a streak).
    """
    b, k, _ = landmarks.shape
    if k == 0:
        out = landmarks.clone()
        return (out, torch.ones(b, 0, dtype=torch.bool, device=landmarks.device)) if return_valid else out
    dev = landmarks.device
    dt = torch.float32 if dev.type == "mps" else torch.float64
    p = params.to(dev, dt)
    target = landmarks.to(dt)
    sy, sx = max(1, math.ceil(height / coarse)), max(1, math.ceil(width / coarse))
    ys = torch.arange(0, height, sy, device=dev, dtype=dt)
    xs = torch.arange(0, width, sx, device=dev, dtype=dt)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    grid = torch.stack((xx.reshape(-1), yy.reshape(-1)), -1)
    u = _nearest(map_points(p, grid, height, width), grid.expand(b, -1, -1), target)
    u, err = _newton(p, target, u, height, width, newton_steps, 2.0 * max(sx, sy))
    bad = err > tol
    if bad.any():
        bi, ki = bad.nonzero(as_tuple=True)
        sub = TPSParams(p.centers[bi], p.kernel_weights[bi], p.affine[bi])
        full = pixel_grid(height, width, dev, dt).reshape(-1, 2)
        t = target[bi, ki][:, None]
        u2 = _nearest(map_points(sub, full, height, width), full.expand(len(bi), -1, -1), t)
        u2, err2 = _newton(sub, t, u2, height, width, newton_steps, 1.0)
        better = err2[:, 0] < err[bi, ki]
        u[bi[better], ki[better]] = u2[better, 0]
        err[bi[better], ki[better]] = err2[better, 0]
    if not return_valid:
        return u.to(landmarks.dtype)
    _, jac = _eval_jac(p, C.points_to_norm(u, (height, width), align_corners=True))
    valid = (err < lost_px) & (torch.linalg.det(jac) > 0)
    return u.to(landmarks.dtype), valid


def crop_map(grid_px: torch.Tensor, margin: int) -> torch.Tensor:
    """Restrict a pixel sampling map to the centre after slicing ``margin`` px per side from both images."""
    if margin == 0:
        return grid_px
    return C.canvas_to_view(grid_px[:, margin:-margin, margin:-margin], margin)


def random_tps(images, landmarks, visible, config="paper", generator=None, strength=1.0, aff_strength=None,
               lost_px: float = 0.1):
    """Warp images and move landmarks with one random TPS each; returns ``(images, landmarks, visible)``.

    A landmark with no well-defined position in the warped image (no pixel samples it, or the map folds
    there; see :func:`warp_landmarks`) keeps its best-effort coordinates and is marked invisible.
    """
    b, _, h, w = images.shape
    params = sample_tps(b, config, generator, strength, aff_strength)
    lm, ok = warp_landmarks(params, landmarks, h, w, return_valid=True, lost_px=lost_px)
    return warp_images(images, params), lm, visible & ok.to(visible.device)


# ----------------------------------------------------------------------------- pairs
@dataclass
class WarpPair:
    """Reference ``Warper`` output. ``view1 = TPS₂(view2)``, ``view2 = TPS₁(I)``.

    grid: ``(B, H, W, 2)`` pixel map, ``grid[u]`` = location in view2 of pixel ``u`` of view1.
    landmarks1/2: the input landmarks moved into view1/view2 (``None`` without landmarks).
    visible1/2: the input visibility, and-ed with "the point has a well-defined position in that view".
    """

    view1: torch.Tensor
    view2: torch.Tensor
    grid: torch.Tensor
    landmarks1: torch.Tensor | None
    landmarks2: torch.Tensor | None
    visible1: torch.Tensor | None
    visible2: torch.Tensor | None
    params1: TPSParams
    params2: TPSParams


def warp_pair(images: torch.Tensor, config: str | TPSConfig, generator: torch.Generator | None = None,
              strength1: float = 1.0, aff_strength1: float = 1.0,
              landmarks: torch.Tensor | None = None, visible: torch.Tensor | None = None,
              lost_px: float = 0.1) -> WarpPair:
    """A = TPS₁(I), TPS₁ at ``strength1``/``aff_strength1``; B = TPS₂(A) at full strength (2 resamplings)."""
    b, _, h, w = images.shape
    p1 = sample_tps(b, config, generator, strength1, aff_strength1)
    p2 = sample_tps(b, config, generator)
    a = warp_images(images, p1)
    bb = warp_images(a, p2)
    grid = sampling_map(p2, h, w, device=images.device, dtype=images.dtype)
    lm1 = lm2 = v1 = v2 = None
    if landmarks is not None:
        if visible is None:
            visible = torch.ones(landmarks.shape[:2], dtype=torch.bool, device=landmarks.device)
        lm2, ok2 = warp_landmarks(p1, landmarks, h, w, return_valid=True, lost_px=lost_px)
        lm1, ok1 = warp_landmarks(p2, lm2, h, w, return_valid=True, lost_px=lost_px)
        v2 = visible & ok2
        v1 = v2 & ok1
    return WarpPair(bb, a, grid, lm1, lm2, v1, v2, p1, p2)


def dve_pair(images, generator=None, landmarks=None, visible=None, config="dve", strength1=0.5,
             aff_strength1=1.0) -> WarpPair:
    """DVE training pair (§7): view1 = B = TPS₂(A), view2 = A = TPS₁(I) at half strength (affine full)."""
    return warp_pair(images, config, generator, strength1, aff_strength1, landmarks, visible)


def matching_pair(images, generator=None, landmarks=None, visible=None, config="eval") -> WarpPair:
    """Matching-evaluation pair (§5a): view1 = TPS₂∘TPS₁(I), view2 = TPS₁(I), both at full strength."""
    return warp_pair(images, config, generator, 1.0, 1.0, landmarks, visible)

"""Affine-family geometric augmentations that move landmarks exactly as they move pixels.

Conventions (:mod:`equinv.coords`): images ``(B, C, H, W)`` float (any device/dtype, any C); landmarks
``(B, K, 2)`` float **pixel** x, y, 0-based, centre of pixel ``(i, j)`` at ``(x=j, y=i)``; visible ``(B, K)``
bool; ``K`` may be 0.

Every op is a pair ``sample_*`` (random parameters from an explicit CPU ``torch.Generator``, vectorised
over the batch) + ``apply_*`` (deterministic, on the images' device). Each returns
``(images, landmarks, visible)``. Points that leave the image keep their coordinates; use
:func:`equinv.coords.inside`.

Internally all affine ops are one primitive, :func:`warp_affine`: a per-sample ``(B, 2, 3)`` matrix ``M``
maps an **output** pixel coordinate to the **source** pixel coordinate it samples (bilinear, zero
padding, ``align_corners=False``: :func:`equinv.coords.pix_to_norm`); landmarks move by ``M⁻¹``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from equinv import coords as C

Tensors = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


# ----------------------------------------------------------------------------- coordinate helpers
def pixel_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """``(H, W, 2)`` pixel-centre coordinates (x, y) of every pixel."""
    ys = torch.arange(height, device=device, dtype=dtype)
    xs = torch.arange(width, device=device, dtype=dtype)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((xx, yy), -1)


def _to3x3(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(m.shape[0], 1, 3)
    return torch.cat((m, bottom), 1)


def apply_affine_points(m: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Apply ``(B, 2, 3)`` matrices to ``(B, K, 2)`` points."""
    return points @ m[:, :, :2].transpose(1, 2) + m[:, None, :, 2]


# ----------------------------------------------------------------------------- generic affine warp
def norm_grid(m_out_to_src: torch.Tensor, points: torch.Tensor, height: int, width: int,
              dtype=torch.float32) -> torch.Tensor:
    """``(B, P, 2)`` grid_sample coordinates (``align_corners=False``) of output pixel ``points`` ``(P, 2)``.

    The pixel → normalised conversion of the source is folded into the ``(B, 2, 3)`` matrices (in
    float64, tiny), so the grid itself is one float ``(B, P, 2)`` product, not a float64 pipeline.
    """
    m = m_out_to_src.to(device=points.device, dtype=torch.float64)
    (sx, ox), (sy, oy) = C.norm_affine(width), C.norm_affine(height)  # n = s·p + o per axis
    a = m * torch.tensor([sx, sy], dtype=torch.float64, device=m.device)[None, :, None]
    a[:, :, 2] += torch.tensor([ox, oy], dtype=torch.float64, device=m.device)
    hom = torch.cat((points.to(dtype), torch.ones(points.shape[0], 1, dtype=dtype, device=points.device)), 1)
    b, n = a.shape[0], points.shape[0]
    # one (P, 3) @ (3, 2B) product (a batched matmul with 3×2 matrices is far slower on a CPU)
    flat = hom @ a.to(dtype).reshape(b * 2, 3).T
    return flat.reshape(n, b, 2).transpose(0, 1).contiguous()


def sample_points(images: torch.Tensor, m_out_to_src: torch.Tensor, points: torch.Tensor,
                  padding_mode: str = "zeros") -> torch.Tensor:
    """Bilinear samples ``(B, C, P)`` of ``images`` at output pixel ``points`` ``(P, 2)`` mapped by ``M``.

    Exactly the pixels :func:`warp_affine` renders at those output coordinates (same matrices, same
    grid_sample), for an arbitrary set of output pixels (e.g. only the part of a view that survives a crop).
    """
    b, _, h, w = images.shape
    grid = norm_grid(m_out_to_src, points.to(images.device), h, w, torch.float32)
    img = images if images.is_floating_point() else images.float()
    out = F.grid_sample(img, grid.to(img.dtype)[:, None], mode="bilinear", padding_mode=padding_mode,
                        align_corners=False)
    return out[:, :, 0]


def transform_landmarks(m_out_to_src: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
    """Landmarks moved by ``M⁻¹`` (computed in float64)."""
    m = m_out_to_src.to(device=landmarks.device, dtype=torch.float64)
    inv = torch.linalg.inv(_to3x3(m))[:, :2]
    return apply_affine_points(inv, landmarks.to(torch.float64)).to(landmarks.dtype)


def warp_affine(images: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor,
                m_out_to_src: torch.Tensor, out_size: tuple[int, int] | None = None,
                padding_mode: str = "zeros") -> Tensors:
    """Resample ``images`` with ``(B, 2, 3)`` pixel-space matrices mapping output → source pixels.

    Args:
        images: ``(B, C, H, W)``; landmarks ``(B, K, 2)`` pixels; visible ``(B, K)``.
        m_out_to_src: ``(B, 2, 3)`` (any device; moved to the images' device). The grid is built in float32
            from the float64 matrices (:func:`norm_grid`); landmarks move in float64.
        out_size: ``(H', W')`` of the output; default the input size.
    Returns ``(images (B, C, H', W'), landmarks moved by M⁻¹, visible)``.
    """
    b, c, h, w = images.shape
    ho, wo = out_size if out_size is not None else (h, w)
    dev, dt = images.device, images.dtype
    grid = norm_grid(m_out_to_src, pixel_grid(ho, wo, dev, torch.float32).reshape(-1, 2), h, w)
    out = F.grid_sample(images, grid.reshape(b, ho, wo, 2).to(dt), mode="bilinear",
                        padding_mode=padding_mode, align_corners=False)
    lm = transform_landmarks(m_out_to_src, landmarks.to(dev))
    return out, lm, visible


# ----------------------------------------------------------------------------- random resized crop
def sample_rrc(batch: int, height: int, width: int, generator: torch.Generator | None = None,
               scale: tuple[float, float] = (0.2, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), attempts: int = 10) -> torch.Tensor:
    """torchvision ``RandomResizedCrop.get_params`` for a batch: ``(B, 4)`` int64 boxes ``(top, left, h, w)``.

    Ten attempts per sample (area ~ U(scale)·HW, log-aspect ~ U(log ratio)); the first that fits is kept;
    samples where none fits fall back to the largest centred crop with the aspect clamped to ``ratio``.
    """
    area = height * width
    g = generator
    target = area * torch.empty(batch, attempts).uniform_(scale[0], scale[1], generator=g)
    logr = torch.empty(batch, attempts).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    aspect = torch.exp(logr)
    cw = torch.round(torch.sqrt(target * aspect)).long()
    ch = torch.round(torch.sqrt(target / aspect)).long()
    ok = (cw > 0) & (cw <= width) & (ch > 0) & (ch <= height)
    first = torch.argmax(ok.int(), 1)  # index of the first valid attempt (0 when none)
    any_ok = ok.any(1)
    cw = cw.gather(1, first[:, None])[:, 0]
    ch = ch.gather(1, first[:, None])[:, 0]
    # fallback: central crop (torchvision semantics)
    in_ratio = width / height
    if in_ratio < min(ratio):
        fw, fh = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fh, fw = height, int(round(height * max(ratio)))
    else:
        fw, fh = width, height
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
    u = torch.rand(batch, 2, generator=g)
    top = torch.floor(u[:, 0] * (height - ch + 1).double()).long()
    left = torch.floor(u[:, 1] * (width - cw + 1).double()).long()
    top = torch.where(any_ok, top, (height - ch) // 2)
    left = torch.where(any_ok, left, (width - cw) // 2)
    return torch.stack((top, left, ch, cw), 1)


def crop_resize_matrix(boxes: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """``(B, 2, 3)`` output→source matrix resizing box ``(top, left, h, w)`` (pixel edges) to ``out_size``.

    The map is :func:`equinv.coords.canvas_to_source` (``out_size`` ``(H', W')`` is the canvas): its scale
    ``w/W'`` and its value at output pixel 0 as the offset.
    """
    ho, wo = out_size
    top, left, h, w = boxes.double().unbind(1)
    m = torch.zeros(boxes.shape[0], 2, 3, dtype=torch.float64)
    m[:, 0, 0], m[:, 1, 1] = w / wo, h / ho
    m[:, :, 2] = C.canvas_to_source(torch.zeros(boxes.shape[0], 2, dtype=torch.float64),
                                    (left, top, left + w, top + h), (ho, wo))
    return m


def apply_rrc(images: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor,
              boxes: torch.Tensor, size: int | tuple[int, int]) -> Tensors:
    """Crop each box, resize it to ``size`` (bilinear, no antialias: fine while crops are ≤ ``size``)."""
    out = (size, size) if isinstance(size, int) else tuple(size)
    return warp_affine(images, landmarks, visible, crop_resize_matrix(boxes, out), out)


def random_resized_crop(images, landmarks, visible, size, generator=None,
                        scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)) -> Tensors:
    """:func:`sample_rrc` then :func:`apply_rrc`."""
    b, _, h, w = images.shape
    return apply_rrc(images, landmarks, visible, sample_rrc(b, h, w, generator, scale, ratio), size)


# ----------------------------------------------------------------------------- flips
def sample_hflip(batch: int, p: float = 0.5, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B,)`` bool: which samples are flipped."""
    return torch.rand(batch, generator=generator) < p


def apply_hflip(images: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor,
                flags: torch.Tensor, flip_perm: Sequence[int] | None = None) -> Tensors:
    """Mirror the flagged samples (:func:`equinv.coords.hflip_points`); then relabel with ``flip_perm``.

    ``flip_perm[i]`` is the index of the point that becomes point ``i`` after the flip (e.g. left eye ↔
    right eye). Without ``flip_perm`` the indices are kept (only sensible for symmetric point sets).
    """
    f = flags.to(images.device)
    out = torch.where(f[:, None, None, None], images.flip(-1), images)
    return (out, *hflip_landmarks(landmarks, visible, flags, images.shape[-1], flip_perm))


def hflip_landmarks(landmarks: torch.Tensor, visible: torch.Tensor, flags: torch.Tensor, width: int,
                    flip_perm: Sequence[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The landmark half of :func:`apply_hflip` for images ``width`` px wide: ``(B, K, 2)``, ``(B, K)``."""
    perm = list(flip_perm) if flip_perm is not None and landmarks.shape[1] > 0 else None
    fl = flags[:, None].to(landmarks.device)
    lm = torch.where(fl[..., None], C.hflip_points(landmarks, width, perm), landmarks)
    vis = visible if perm is None else torch.where(fl, visible[:, perm], visible)
    return lm, vis


def random_hflip(images, landmarks, visible, p=0.5, flip_perm=None, generator=None) -> Tensors:
    """:func:`sample_hflip` then :func:`apply_hflip`."""
    return apply_hflip(images, landmarks, visible, sample_hflip(images.shape[0], p, generator), flip_perm)


# ----------------------------------------------------------------------------- crops and resize
def slice_margin(images: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor,
                 margin: int | tuple[int, int, int, int]) -> Tensors:
    """Drop ``margin`` px per side (int, or ``(top, bottom, left, right)``): the reference's 20-px slice."""
    t, bo, le, r = (margin,) * 4 if isinstance(margin, int) else margin
    h, w = images.shape[-2:]
    out = images[..., t:h - bo, le:w - r]
    return out, C.canvas_to_view(landmarks, (t, le)), visible


def center_crop(images, landmarks, visible, size: int | tuple[int, int]) -> Tensors:
    """Centre crop to ``size`` (integer slicing; the extra pixel of an odd margin goes to bottom/right)."""
    ho, wo = (size, size) if isinstance(size, int) else size
    h, w = images.shape[-2:]
    t, le = (h - ho) // 2, (w - wo) // 2
    return slice_margin(images, landmarks, visible, (t, h - ho - t, le, w - wo - le))


def resize(images: torch.Tensor, landmarks: torch.Tensor, visible: torch.Tensor,
           size: int | tuple[int, int], antialias: bool = True) -> Tensors:
    """Bilinear resize (antialiased when shrinking); landmarks by :func:`equinv.coords.resize_points`."""
    ho, wo = (size, size) if isinstance(size, int) else size
    h, w = images.shape[-2:]
    if (ho, wo) == (h, w):
        return images, landmarks, visible
    out = F.interpolate(images, size=(ho, wo), mode="bilinear", align_corners=False, antialias=antialias)
    return out, C.resize_points(landmarks, (h, w), (ho, wo)), visible


# ----------------------------------------------------------------------------- random affine
def sample_affine(batch: int, height: int, width: int, generator: torch.Generator | None = None,
                  degrees: float = 0.0, scale: tuple[float, float] = (1.0, 1.0),
                  translate: tuple[float, float] = (0.0, 0.0)) -> torch.Tensor:
    """``(B, 2, 3)`` output→source matrices of a rotation/scale about the image centre plus a shift.

    Angle ~ U(-degrees, degrees) (positive = counter-clockwise on screen), scale ~ U(scale),
    shift ~ U(±translate·(W, H)) pixels.
    """
    u = torch.rand(batch, 4, generator=generator, dtype=torch.float64)
    ang = (2 * u[:, 0] - 1) * math.radians(degrees)
    s = scale[0] + (scale[1] - scale[0]) * u[:, 1]
    tx = (2 * u[:, 2] - 1) * translate[0] * width
    ty = (2 * u[:, 3] - 1) * translate[1] * height
    cx, cy = C.image_centre(width), C.image_centre(height)
    cos, sin = torch.cos(ang) * s, torch.sin(ang) * s
    # forward (source → output): out = R_s (src - c) + c + t, with y pointing down
    fwd = torch.zeros(batch, 2, 3, dtype=torch.float64)
    fwd[:, 0, 0], fwd[:, 0, 1], fwd[:, 1, 0], fwd[:, 1, 1] = cos, sin, -sin, cos
    fwd[:, 0, 2] = cx + tx - (cos * cx + sin * cy)
    fwd[:, 1, 2] = cy + ty - (-sin * cx + cos * cy)
    return torch.linalg.inv(_to3x3(fwd))[:, :2]


def random_affine(images, landmarks, visible, generator=None, degrees=0.0, scale=(1.0, 1.0),
                  translate=(0.0, 0.0)) -> Tensors:
    """:func:`sample_affine` then :func:`warp_affine` (same output size)."""
    b, _, h, w = images.shape
    m = sample_affine(b, h, w, generator, degrees, scale, translate)
    return warp_affine(images, landmarks, visible, m)

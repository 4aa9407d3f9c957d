"""Dot-test helpers: one Gaussian dot per landmark, each in its own channel, and a dot locator."""

from __future__ import annotations

import torch


def pixel_coords(h: int, w: int, device=None) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(h, device=device, dtype=torch.float32),
                            torch.arange(w, device=device, dtype=torch.float32), indexing="ij")
    return torch.stack((xx, yy), -1)  # (H, W, 2)


def dot_images(landmarks: torch.Tensor, h: int, w: int, sigma: float = 1.2) -> torch.Tensor:
    """``(B, K, H, W)``: channel k holds a unit-peak Gaussian at landmark k."""
    grid = pixel_coords(h, w, landmarks.device)
    d2 = ((grid[None, None] - landmarks[:, :, None, None, :]) ** 2).sum(-1)
    return torch.exp(-d2 / (2 * sigma**2))


def locate(images: torch.Tensor, guess: torch.Tensor, radius: float = 8.0,
           power: float = 4.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Centroid of ``intensity**power`` of channel k within ``radius`` of ``guess[:, k]``; and the mass.

    The power sharpens the blob (a Gaussian⁴ has half the sigma), which shrinks the centroid bias that a
    strongly non-linear warp gives a wide blob; the mass is of the plain intensity.
    """
    h, w = images.shape[-2:]
    grid = pixel_coords(h, w, images.device)
    near = ((grid[None, None] - guess[:, :, None, None, :]) ** 2).sum(-1) <= radius**2
    wgt = images.clamp_min(0) * near
    mass = wgt.sum((-1, -2))
    sharp = wgt**power
    cen = (sharp[..., None] * grid).sum((-2, -3)) / sharp.sum((-1, -2)).clamp_min(1e-30)[..., None]
    return cen, mass


def dot_errors(images: torch.Tensor, predicted: torch.Tensor, keep: torch.Tensor, radius: float = 8.0,
               min_mass: float = 2.0) -> torch.Tensor:
    """Distances (px) between the located dots and ``predicted`` for points well inside the image."""
    h, w = images.shape[-2:]
    m = radius + 1
    x, y = predicted[..., 0], predicted[..., 1]
    ok = keep & (x >= m) & (x <= w - 1 - m) & (y >= m) & (y <= h - 1 - m)
    cen, mass = locate(images, predicted, radius)
    ok = ok & (mass > min_mass)
    return (cen - predicted).norm(dim=-1)[ok]

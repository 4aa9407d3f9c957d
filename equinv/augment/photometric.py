"""Photometric augmentations of the reference view chain, batched on the images' device.

Images are ``(B, 3, H, W)`` float RGB in [0, 1] (before :func:`normalize`). Random parameters come from
``sample_*`` functions drawing on an explicit CPU ``torch.Generator``; ``apply_*`` functions are
deterministic. None of these ops touches landmarks.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from kornia.enhance import jpeg_codec_differentiable

FACE_MEAN = (0.5084, 0.4224, 0.3769)
FACE_STD = (0.2599, 0.2371, 0.2323)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: AlexNet / fb.resnet PCA lighting statistics (ImageNet RGB).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))

_GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision / PIL "L"


def _col(x: torch.Tensor) -> torch.Tensor:
    return x.reshape(-1, 1, 1, 1)


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` → ``(B, 1, H, W)`` luma."""
    w = torch.tensor(_GRAY, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
    return (images * w).sum(1, keepdim=True)


# ----------------------------------------------------------------------------- colour jitter
@dataclass
class JitterParams:
    """Per-sample factors ``(B,)`` and the order ``(B, 3)`` of (0 brightness, 1 contrast, 2 saturation)."""

    brightness: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    order: torch.Tensor


def sample_jitter(batch: int, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                  generator: torch.Generator | None = None) -> JitterParams:
    """torchvision ``ColorJitter`` factors ~ U[max(0, 1 - s), 1 + s], a random order per sample."""
    def factor(s):
        return torch.empty(batch).uniform_(max(0.0, 1 - s), 1 + s, generator=generator)

    b, c, s = factor(brightness), factor(contrast), factor(saturation)
    order = torch.rand(batch, 3, generator=generator).argsort(1)
    return JitterParams(b, c, s, order)


def _blend(img: torch.Tensor, other: torch.Tensor, factor: torch.Tensor) -> torch.Tensor:
    return (factor * img + (1 - factor) * other).clamp(0, 1)


def apply_jitter(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Brightness / contrast / saturation as torchvision's tensor ops, each sample in its own order.

    brightness: ``f·x``; contrast: blend with the mean luma of the image; saturation: blend with the
    luma image; clamp to [0, 1] after each. (Hue jitter is 0 in the reference and not implemented.)
    All three are ``clamp(f·x + (1 − f)·other)`` with ``other`` = 0, the mean luma or the luma, so each
    of the three steps is one blend whose ``other`` is selected per sample (no op is computed and thrown away).
    """
    dev, dt = images.device, images.dtype
    factors = torch.stack((params.brightness, params.contrast, params.saturation), 1).to(dev, dt)  # (B, 3)
    order = params.order.to(dev)
    x = images
    for step in range(3):
        op = order[:, step]
        f = _col(factors.gather(1, op[:, None])[:, 0])
        gray = grayscale(x)
        w_mean = _col((op == 1).to(dt))
        w_gray = _col((op == 2).to(dt))
        other = w_mean * gray.mean((2, 3), keepdim=True) + w_gray * gray
        x = torch.addcmul(other * (1 - f), x, f).clamp_(0, 1)
    return x


def color_jitter(images, brightness=0.4, contrast=0.4, saturation=0.4, generator=None) -> torch.Tensor:
    return apply_jitter(images, sample_jitter(images.shape[0], brightness, contrast, saturation, generator))


# ----------------------------------------------------------------------------- PCA lighting
def sample_pca_lighting(batch: int, alpha_std: float = 0.1,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B, 3)`` RGB offsets ``E(α ⊙ λ)`` with α ~ N(0, alpha_std²) (the reference's ``PcaAug``)."""
    alpha = torch.randn(batch, 3, generator=generator) * alpha_std
    vec = torch.tensor(PCA_EIGVEC)
    val = torch.tensor(PCA_EIGVAL)
    return (alpha * val) @ vec.T


def apply_pca_lighting(images: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Add a per-image constant colour; not clamped (the reference adds it after ToTensor, unclamped)."""
    return images + offsets.to(images.device, images.dtype)[:, :, None, None]


def pca_lighting(images, alpha_std=0.1, generator=None) -> torch.Tensor:
    return apply_pca_lighting(images, sample_pca_lighting(images.shape[0], alpha_std, generator))


# ----------------------------------------------------------------------------- JPEG noise
@dataclass
class JpegParams:
    """``size (B,)`` square side r the image is resized to before coding; ``quality (B,)`` in 30..98."""

    size: torch.Tensor
    quality: torch.Tensor


def sample_jpeg(batch: int, width: int, generator: torch.Generator | None = None,
                low: int = 30, high: int = 99, max_factor: float = 2.0) -> JpegParams:
    """The reference's ``JPEGNoise`` draws: ``r = max(⌊0.8W⌋, ⌊W(1 + 0.5·N(0,1))⌋)``, quality ~ U{low..high-1}
    (30..98).

    ``r`` is capped at ``max_factor·W`` (a > 2σ event) to bound the batch canvas.
    """
    z = torch.randn(batch, generator=generator, dtype=torch.float64)
    r = torch.maximum(torch.full((batch,), float(int(0.8 * width)), dtype=torch.float64),
                      torch.trunc(width * (1 + 0.5 * z)))
    r = r.clamp(max=max_factor * width).long()
    q = torch.randint(low, high, (batch,), generator=generator)
    return JpegParams(r, q)


def _resize_into_canvas(images: torch.Tensor, r: torch.Tensor, side: int) -> torch.Tensor:
    """Resample image b to the top-left ``r_b × r_b`` of a ``side × side`` canvas (border-replicated)."""
    dev = images.device
    c = torch.arange(side, device=dev, dtype=torch.float64)
    g = 2 * (c[None] + 0.5) / r.reshape(-1, 1) - 1  # canvas pixel c -> normalised image coordinate
    grid = torch.stack(torch.broadcast_tensors(g[:, None, :], g[:, :, None]), -1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def _resize_from_canvas(canvas: torch.Tensor, r: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_resize_into_canvas`: the ``r_b × r_b`` corner back to ``h × w``."""
    dev, side = canvas.device, canvas.shape[-1]
    px = torch.arange(w, device=dev, dtype=torch.float64)
    py = torch.arange(h, device=dev, dtype=torch.float64)
    r1 = r.reshape(-1, 1)
    bx = ((px[None] + 0.5) * r1 / w) * 2 / side - 1
    by = ((py[None] + 0.5) * r1 / h) * 2 / side - 1
    back = torch.stack(torch.broadcast_tensors(bx[:, None, :], by[:, :, None]), -1)
    return F.grid_sample(canvas, back.to(canvas.dtype), mode="bilinear", padding_mode="border", align_corners=False)


# torchvision 0.29 marks its image codecs deprecated in favour of torchcodec; they are what we pin.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def _libjpeg_roundtrip(canvas: torch.Tensor, r: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Real JPEG (libjpeg-turbo on CPU, nvjpeg on CUDA, via torchvision.io) of each ``r_b × r_b`` corner.

    libjpeg codes one image per call and images differ in size and quality, so the batch goes to
    torchvision as a list, one call per distinct quality (≤ 69); the pixels never pass through Python.
    """
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = (canvas.clamp(0, 1) * 255).round_().to(torch.uint8)
    sizes, quals = r.tolist(), quality.tolist()
    out = canvas.clone()
    for q in sorted(set(quals)):
        idx = [i for i, v in enumerate(quals) if v == q]
        crops = [u8[i, :, : sizes[i], : sizes[i]].contiguous() for i in idx]
        try:
            coded = encode_jpeg(crops, quality=int(q))
            decoded = decode_jpeg([c.cpu() for c in coded], device=canvas.device)
        except RuntimeError:  # a CUDA build without nvjpeg: code on the CPU instead
            coded = encode_jpeg([c.cpu() for c in crops], quality=int(q))
            decoded = [d.to(canvas.device) for d in decode_jpeg(coded)]
        for i, d in zip(idx, decoded, strict=True):
            out[i, :, : sizes[i], : sizes[i]] = d.to(canvas.dtype) / 255.0
    return out


def apply_jpeg(images: torch.Tensor, params: JpegParams, codec: str = "libjpeg") -> torch.Tensor:
    """Resize each image to its own ``r × r``, JPEG-code it at its own quality, resize back to ``H × W``.

    Every image is resampled (bilinear, one ``grid_sample`` with a per-sample scale) into the top-left
    ``r × r`` of a common ``R × R`` canvas (``R`` = the batch's largest ``r`` rounded up to 16; the rest
    replicates the image border), coded, and resampled back with one more ``grid_sample``.

    Args:
        codec: ``"libjpeg"`` (default): real JPEG as the reference's PIL, through torchvision.io
            (nvjpeg on CUDA); ``"kornia"``: kornia's differentiable codec on the whole canvas at once
            (per-sample quality; approximate, and much slower on a CPU).

    Differences to the reference (PIL): bilinear resampling without antialias instead of PIL's
    antialiased bilinear resize; ``r`` capped at ``2W`` by :func:`sample_jpeg`.
    """
    _, _, h, w = images.shape
    r = params.size.to(images.device, torch.float64)
    side = int(-(-int(params.size.max()) // 16) * 16)
    canvas = _resize_into_canvas(images, r, side)
    if codec == "libjpeg":
        coded = _libjpeg_roundtrip(canvas, params.size, params.quality)
    elif codec == "kornia":
        coded = jpeg_codec_differentiable(canvas.clamp(0, 1), params.quality.to(images.device, images.dtype))
    else:
        raise ValueError(f"unknown JPEG codec {codec!r}: use 'libjpeg' or 'kornia'")
    return _resize_from_canvas(coded, r, h, w).clamp(0, 1)


def jpeg_noise(images, generator=None) -> torch.Tensor:
    return apply_jpeg(images, sample_jpeg(images.shape[0], images.shape[-1], generator))


# ----------------------------------------------------------------------------- grayscale, normalise
def sample_grayscale(batch: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    return torch.rand(batch, generator=generator) < p


def apply_grayscale(images: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Replace the flagged images by their luma, replicated to 3 channels."""
    g = grayscale(images).expand_as(images)
    return torch.where(flags.to(images.device).reshape(-1, 1, 1, 1), g, images)


def normalize(images: torch.Tensor, mean=FACE_MEAN, std=FACE_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return (images - m) / s


def denormalize(images: torch.Tensor, mean=FACE_MEAN, std=FACE_STD) -> torch.Tensor:
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return images * s + m

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

from equinv import coords as C

FACE_MEAN = (0.5084, 0.4224, 0.3769)
FACE_STD = (0.2599, 0.2371, 0.2323)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: AlexNet / fb.resnet PCA lighting statistics (ImageNet RGB).
PCA_EIGVAL = (0.2175, 0.0188, 0.0045)
PCA_EIGVEC = ((-0.5675, 0.7192, 0.4009),
              (-0.5808, -0.0045, -0.8140),
              (-0.5836, -0.6948, 0.4203))

GRAY = (0.299, 0.587, 0.114)  # ITU-R 601-2 luma, as torchvision / PIL "L"


def grayscale(images: torch.Tensor) -> torch.Tensor:
    """``(B, 3, H, W)`` → ``(B, 1, H, W)`` luma."""
    w = torch.tensor(GRAY, device=images.device, dtype=images.dtype).reshape(1, 3, 1, 1)
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


def jitter_step(params: JitterParams, step: int, mean_rgb: torch.Tensor | None,
                scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Step ``step`` of every sample's jitter as a colour matrix ``(B, 3, 3)`` and an offset ``(B, 3, 1)``.

    brightness ``f·x``; contrast ``f·x + (1 − f)·m`` (``m`` the mean luma, from ``mean_rgb (B, 3)``, the
    per-channel image means); saturation ``f·x + (1 − f)·luma(x)``: all ``M x + o`` per pixel (clamp
    after). ``scale`` multiplies the input (e.g. ``1/255`` to take 0–255 images; ``mean_rgb`` is of the
    unscaled input).
    """
    dt = torch.float32
    factors = torch.stack((params.brightness, params.contrast, params.saturation), 1).to(dt)  # (B, 3)
    op = params.order[:, step].to("cpu")
    f = factors.gather(1, op[:, None])  # (B, 1)
    luma = torch.tensor(GRAY, dtype=dt)
    eye = torch.eye(3, dtype=dt)
    sat = (op == 2).to(dt)[:, None, None]
    m = f[:, :, None] * eye + (1 - f)[:, :, None] * sat * luma.expand(3, 3)
    o = torch.zeros(op.shape[0], 3, 1, dtype=dt)
    if mean_rgb is not None:
        con = (op == 1).to(dt)[:, None]
        o = ((1 - f) * con * (mean_rgb.to("cpu", dt) * scale @ luma)[:, None])[:, :, None].expand(-1, 3, 1)
    return m * scale, o


def needs_mean(params: JitterParams, step: int) -> bool:
    """Whether any sample has its contrast (which needs the image mean) at ``step``."""
    return bool((params.order[:, step] == 1).any())


def affine_colour(x: torch.Tensor, m: torch.Tensor, o: torch.Tensor, clamp: bool = True) -> torch.Tensor:
    """``clamp(M x + o)`` per pixel of ``x (B, 3, P)`` (one batched matmul, clamp in place)."""
    y = torch.baddbmm(o.to(x.device, x.dtype), m.to(x.device, x.dtype), x)
    return y.clamp_(0, 1) if clamp else y


def apply_jitter(images: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """Brightness / contrast / saturation as torchvision's tensor ops, each sample in its own order.

    brightness: ``f·x``; contrast: blend with the mean luma of the image; saturation: blend with the
    luma image; clamp to [0, 1] after each. (Hue jitter is 0 in the reference and not implemented.)
    Every step of every sample is ``clamp(M x + o)`` with a per-sample colour matrix (:func:`jitter_step`),
    so a step is one batched matmul over all pixels plus a clamp; the contrast mean is the luma of the
    per-channel means (equal to torchvision's mean of the luma up to float rounding).
    """
    b, c = images.shape[:2]
    x = images.reshape(b, c, -1)
    dt = x.dtype
    x = x.float()
    for step in range(3):
        mean = x.mean(2) if needs_mean(params, step) else None
        x = affine_colour(x, *jitter_step(params, step, mean))
    return x.to(dt).reshape(images.shape)


def color_jitter(images, brightness=0.4, contrast=0.4, saturation=0.4, generator=None) -> torch.Tensor:
    """Random brightness, contrast and saturation factors per image, applied to ``(B, 3, H, W)`` in [0, 1]."""
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
    """AlexNet PCA lighting noise: add ``eigvec · (α · eigval)``, ``α ~ N(0, alpha_std)`` per image."""
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


def _groups(sizes: list[int]) -> list[tuple[int, int, int]]:
    """``(r, start, stop)`` runs of equal ``r`` in a sorted list."""
    out, a = [], 0
    for i in range(1, len(sizes) + 1):
        if i == len(sizes) or sizes[i] != sizes[a]:
            out.append((sizes[a], a, i))
            a = i
    return out


# torchvision 0.29 marks its image codecs deprecated in favour of torchcodec; they are what we pin.
warnings.filterwarnings("ignore", message="The image decoding and encoding capabilities of TorchVision",
                        category=DeprecationWarning)


def _codec(crops: list[torch.Tensor], quality: list[int]) -> list[torch.Tensor]:
    """JPEG-code each ``(3, r, r)`` uint8 crop at its own quality; decoded crops on the crops' device.

    CPU: libjpeg-turbo one image per call through the raw torchvision ops (no per-call deprecation
    warning; a crop that is a channels-last view is handed to libjpeg without a copy). CUDA: nvjpeg,
    one batched call per distinct quality, or libjpeg where torchvision lacks nvjpeg.
    """
    import torchvision.io as tvio

    dev = crops[0].device
    if dev.type == "cpu":
        enc, dec = torch.ops.image.encode_jpeg, torch.ops.image.decode_jpeg
        mode = tvio.ImageReadMode.UNCHANGED.value
        return [dec(enc(c, q), mode, False) for c, q in zip(crops, quality, strict=True)]
    out: list[torch.Tensor | None] = [None] * len(crops)
    for q in sorted(set(quality)):
        idx = [i for i, v in enumerate(quality) if v == q]
        sel = [crops[i].contiguous() for i in idx]
        try:
            coded = tvio.encode_jpeg(sel, quality=int(q))
            decoded = tvio.decode_jpeg([c.cpu() for c in coded], device=dev)
        except RuntimeError:  # a CUDA build without nvjpeg: code on the CPU instead
            coded = tvio.encode_jpeg([c.cpu() for c in sel], quality=int(q))
            decoded = [d.to(dev) for d in tvio.decode_jpeg(coded)]
        for i, d in zip(idx, decoded, strict=True):
            out[i] = d
    return out


def jpeg_sorted(images: torch.Tensor, params: JpegParams,
                scale: float = 255.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The JPEG noise of :func:`apply_jpeg`, in the order of increasing ``r`` and on the 0–255 scale.

    Args:
        images: ``(B, 3, H, W)`` uint8 (0–255), or float on the 0–1 scale (``scale=255``, the default)
            or already on the 0–255 scale (``scale=1``).
    Returns ``(out, perm)``: float32 ``(B, 3, H, W)`` in [0, 255], ``out[k]`` the coded ``images[perm[k]]``.

    The batch is sorted by ``r`` and cut into runs of equal ``r``; each run is one bilinear resize to
    ``r × r`` (into a channels-last uint8 buffer whose images libjpeg reads in place), one codec call per
    image, and one bilinear resize back written straight into its slice of the output: no padded canvas,
    no per-sample grid. The caller undoes the sort once, on whatever it derives from ``out``
    (see :func:`apply_jpeg`; the view recipe undoes it on its final, cropped views).
    """
    b, _, h, w = images.shape
    dev = images.device
    r = params.size.to("cpu", torch.long)
    perm = torch.argsort(r, stable=True)
    sizes = r[perm].tolist()
    quality = params.quality.to("cpu")[perm].tolist()
    x = images.index_select(0, perm.to(dev))
    out = torch.empty(b, 3, h, w, device=dev, dtype=torch.float32)
    for side, a, z in _groups(sizes):
        src = x[a:z]
        src = src.float() if src.dtype == torch.uint8 else (src * scale if scale != 1 else src).float()
        if (side, side) != (h, w):
            src = F.interpolate(src, size=(side, side), mode="bilinear", align_corners=False)
        u8 = src.clamp_(0, 255).round_().to(torch.uint8, memory_format=torch.channels_last)
        decoded = torch.stack(_codec(list(u8.unbind(0)), quality[a:z]))
        if (side, side) == (h, w):
            out[a:z] = decoded
        else:
            torch._C._nn.upsample_bilinear2d(decoded.float(), (h, w), False, None, None, out=out[a:z])
    return out, perm


def apply_jpeg(images: torch.Tensor, params: JpegParams, codec: str = "libjpeg") -> torch.Tensor:
    """Resize each image to its own ``r × r``, JPEG-code it at its own quality, resize back to ``H × W``.

    Both resizes are bilinear without antialias (``align_corners=False``: output pixel ``c`` samples the
    source at ``(c + ½)·size_in/size_out − ½``, clamped to the border), the coded image is the
    ``r × r`` resize rounded to uint8, the result is float in [0, 1]. Images are processed in runs of
    equal ``r`` (see :func:`jpeg_sorted`).

    Args:
        codec: ``"libjpeg"`` (default): real JPEG as the reference's PIL, through torchvision.io
            (nvjpeg on CUDA); ``"kornia"``: kornia's differentiable codec on a common canvas at once
            (per-sample quality; approximate, and much slower on a CPU).

    Differences to the reference (PIL): bilinear resampling without antialias instead of PIL's
    antialiased bilinear resize; ``r`` capped at ``2W`` by :func:`sample_jpeg`.
    """
    if codec == "libjpeg":
        out, perm = jpeg_sorted(images, params, 1.0 if images.dtype == torch.uint8 else 255.0)
        res = out.index_select(0, torch.argsort(perm).to(out.device)).mul_(1 / 255.0)
        return res.to(images.dtype) if images.is_floating_point() else res
    if codec != "kornia":
        raise ValueError(f"unknown JPEG codec {codec!r}: use 'libjpeg' or 'kornia'")
    x = images.float().div(255.0) if images.dtype == torch.uint8 else images
    r = params.size.to(x.device, torch.float64)
    side = int(-(-int(params.size.max()) // 16) * 16)
    canvas = _resize_into_canvas(x, r, side)
    coded = jpeg_codec_differentiable(canvas.clamp(0, 1), params.quality.to(x.device, x.dtype))
    return _resize_from_canvas(coded, r, *x.shape[-2:]).clamp(0, 1)


def _resize_into_canvas(images: torch.Tensor, r: torch.Tensor, side: int) -> torch.Tensor:
    """Resample image b to the top-left ``r_b × r_b`` of a ``side × side`` canvas (border-replicated)."""
    dev = images.device
    c = torch.arange(side, device=dev, dtype=torch.float64)
    g = C.pix_to_norm(c[None], r.reshape(-1, 1))  # canvas pixel c -> normalised coordinate of the r-px image
    grid = torch.stack(torch.broadcast_tensors(g[:, None, :], g[:, :, None]), -1)
    return F.grid_sample(images, grid.to(images.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def _resize_from_canvas(canvas: torch.Tensor, r: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`_resize_into_canvas`: the ``r_b × r_b`` corner back to ``h × w``."""
    dev, side = canvas.device, canvas.shape[-1]
    px = torch.arange(w, device=dev, dtype=torch.float64)
    py = torch.arange(h, device=dev, dtype=torch.float64)
    r1 = r.reshape(-1, 1)
    # output pixel -> the r-px image in the canvas corner (same pixel pitch) -> normalised canvas coordinate
    bx = C.pix_to_norm(C.resize_points(px[None], w, r1), side)
    by = C.pix_to_norm(C.resize_points(py[None], h, r1), side)
    back = torch.stack(torch.broadcast_tensors(bx[:, None, :], by[:, :, None]), -1)
    return F.grid_sample(canvas, back.to(canvas.dtype), mode="bilinear", padding_mode="border",
                         align_corners=False)


def jpeg_noise(images, generator=None) -> torch.Tensor:
    """Re-encode every image as JPEG at a random quality (the reference's JPEG noise)."""
    return apply_jpeg(images, sample_jpeg(images.shape[0], images.shape[-1], generator))


# ----------------------------------------------------------------------------- grayscale, normalise
def sample_grayscale(batch: int, p: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """``(B,)`` bool: which images become grayscale, each with probability ``p``."""
    return torch.rand(batch, generator=generator) < p


def apply_grayscale(images: torch.Tensor, flags: torch.Tensor) -> torch.Tensor:
    """Replace the flagged images by their luma, replicated to 3 channels."""
    g = grayscale(images).expand_as(images)
    return torch.where(flags.to(images.device).reshape(-1, 1, 1, 1), g, images)


def normalize(images: torch.Tensor, mean=FACE_MEAN, std=FACE_STD) -> torch.Tensor:
    """``(x − mean) / std`` per channel of ``(B, 3, H, W)`` images."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return (images - m) / s


def denormalize(images: torch.Tensor, mean=FACE_MEAN, std=FACE_STD) -> torch.Tensor:
    """The inverse of :func:`normalize`: ``x · std + mean`` per channel."""
    m = torch.tensor(mean, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    s = torch.tensor(std, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)
    return images * s + m

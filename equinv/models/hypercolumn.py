"""Hypercolumns from a frozen ResNet (protocol.md §2), kept factorised by layer.

The reference stacks ``[x8, x7, x6, x5, x4]`` (conv5_x first, then conv4_x, conv3_x, conv2_x, the
post-maxpool map) and keeps the first ``layer`` of them; ``layer=4`` (default) is conv5 ⊕ conv4 ⊕ conv3
⊕ conv2: 960-d for ResNet18, 1920 for ResNet50-half, 3840 for ResNet50. Each map is upsampled
bilinearly (``align_corners=False``) to the grid (48² for regression, 96² for matching) and concatenated.

A 1×1 convolution of a hypercolumn is a per-pixel linear map, and bilinear upsampling is linear and
acts on each channel alike, so ``conv(concat_l up(x_l)) = Σ_l up(conv_l(x_l)) + b`` where ``conv_l`` is
the block of the weight that reads layer ``l``. :class:`FactorisedConv1x1` uses this identity so that
heads on hypercolumns never build the ``(B, C, 48, 48)`` tensor: each layer is projected at its own
(coarser) resolution first, which is both faster and lighter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.feature_extraction import create_feature_extractor

from equinv import precision as precision_lib
from equinv.models.backbones import TAP_NAMES, WidthResNet, build_backbone, load_backbone

#: Reference order of the taps, deepest first (x8, x7, x6, x5, x4).
DEEPEST_FIRST = ("layer4", "layer3", "layer2", "layer1", "maxpool")


def reference_taps(layer: int = 4) -> tuple[str, ...]:
    """The reference's ``--layer N``: the first N of conv5, conv4, conv3, conv2, post-maxpool."""
    if not 1 <= layer <= 5:
        raise ValueError(f"layer must be 1..5, got {layer}")
    return DEEPEST_FIRST[:layer]


def frozen_trunk(arch: str, weights: str | Path | dict | None = None, seed: int = 0) -> WidthResNet:
    """A ResNet trunk in eval mode with gradients off.

    Args:
        arch: ``resnet18``, ``resnet34``, ``resnet50`` or ``resnet50_half``.
        weights: a pretraining run directory (its ``backbone.safetensors``), a weights file
            (ours, torchvision's ImageNet ``.pth``, a MoCo/DDP checkpoint) or a state dict; ``None``
            gives the random initialisation drawn with ``seed`` (the "random init" baseline).
    """
    if weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            trunk = build_backbone(arch)
    else:
        trunk = build_backbone(arch)
        if isinstance(weights, (str, Path)) and Path(weights).is_dir():
            weights = Path(weights) / "backbone.safetensors"
        load_backbone(trunk, weights)
    trunk.eval()
    for p in trunk.parameters():
        p.requires_grad_(False)
    return trunk


class Hypercolumn(nn.Module):
    """Per-pixel features stacked from several taps of a frozen trunk.

    Args:
        trunk: a (frozen) torchvision ResNet, e.g. from :func:`frozen_trunk`.
        taps: tap names in stacking order (default: the reference's ``layer=4``, deepest first).
        size: output grid side (48 for regression, 96 for matching).
        normalize: L2-normalise each layer's block per pixel (the reference does this for matching only).

    ``maps(x)``: the taps at their own resolution (the factorised form). ``forward(x)``: the
    materialised ``(B, dim, size, size)`` hypercolumn.
    """

    #: Input statistics the source imposes (``None``: the dataset kind decides, see ``equinv.features.stats``).
    stats: str | None = None
    #: Compute precision and memory order of the trunk pass (:mod:`equinv.precision`); maps come back fp32.
    precision: str = precision_lib.DEFAULT
    channels_last: bool = False

    def __init__(self, trunk: nn.Module, taps: Sequence[str] = reference_taps(4), size: int = 48,
                 normalize: bool = False):
        super().__init__()
        unknown = [t for t in taps if t not in TAP_NAMES]
        if unknown or not taps:
            raise ValueError(f"unknown taps {unknown}; choose from {TAP_NAMES}")
        self.taps, self.size, self.normalize = tuple(taps), size, normalize
        self.extractor = create_feature_extractor(trunk, return_nodes={t: t for t in self.taps})
        chans = dict(zip(TAP_NAMES, trunk.trunk_channels, strict=True))
        self.channels = tuple(chans[t] for t in self.taps)

    @property
    def dim(self) -> int:
        return sum(self.channels)

    def maps(self, x: Tensor) -> list[Tensor]:
        """Each tap at its native resolution, in stacking order (normalised per pixel if asked)."""
        feats = precision_lib.run(self.extractor, x, self.precision, self.channels_last)
        out = [precision_lib.plain(feats[t], self.precision, self.channels_last) for t in self.taps]
        if self.normalize:
            out = [F.normalize(f, dim=1) for f in out]
        return out

    def forward(self, x: Tensor, size: int | None = None) -> Tensor:
        s = size or self.size
        ups = [F.interpolate(m, size=(s, s), mode="bilinear", align_corners=False) for m in self.maps(x)]
        return torch.cat(ups, dim=1)


def bilinear_matrix(n_in: int, n_out: int, device=None, dtype=torch.float32) -> Tensor:
    """``(n_out, n_in)`` matrix of 1-D linear resampling as ``F.interpolate(mode="bilinear",
    align_corners=False)`` does along one axis (the identity when the sizes agree)."""
    key = (n_in, n_out, str(device), dtype)
    m = _BILINEAR.get(key)
    if m is None:
        if n_in == n_out:
            m = torch.eye(n_in, device=device, dtype=dtype)
        else:
            eye = torch.eye(n_in, dtype=torch.float64)[None]  # (1, C = n_in, L = n_in): column j = e_j
            m = F.interpolate(eye, size=n_out, mode="linear", align_corners=False)[0].T.to(device, dtype)
        _BILINEAR[key] = m
    return m


_BILINEAR: dict = {}


class FactorisedConv1x1(nn.Module):
    """A 1×1 convolution over a hypercolumn, evaluated layer by layer at native resolution.

    Args:
        channels: per-layer channel counts of the hypercolumn (``Hypercolumn.channels``).
        out_channels: output channels.
        bias: add a bias (once, not per layer).

    ``forward(maps, size)`` takes the factorised maps; ``dense(hypercolumn)`` applies the same weights
    to a materialised hypercolumn. The two agree to float rounding (``tests/models/test_hypercolumn.py``).
    """

    def __init__(self, channels: Sequence[int], out_channels: int, bias: bool = True):
        super().__init__()
        self.channels = tuple(channels)
        self.conv = nn.Conv2d(sum(self.channels), out_channels, kernel_size=1, bias=bias)

    @property
    def weight(self) -> Tensor:
        return self.conv.weight

    def forward(self, maps: Sequence[Tensor], size: int) -> Tensor:
        # Bilinear upsampling is separable and linear: up(y_l) = U_l · y_l · V_lᵀ. Summing over layers,
        # Σ_l U_l (y_l V_lᵀ) = [U_1 … U_L] · cat_l(y_l V_lᵀ) is one matmul that writes the (B, O, S, S) output
        # once, instead of one interpolation (and its slow backward) per layer.
        w = self.conv.weight.flatten(1)  # (out, C)
        rows, cols = [], []
        start = 0
        for m, c in zip(maps, self.channels, strict=True):
            y = torch.einsum("oc,bchw->bohw", w[:, start : start + c], m)
            start += c
            h, wd = y.shape[-2:]
            if wd != size:
                y = torch.matmul(y, bilinear_matrix(wd, size, y.device, y.dtype).T)
            rows.append(y)
            cols.append(bilinear_matrix(h, size, y.device, y.dtype))
        out = torch.matmul(torch.cat(cols, dim=1), torch.cat(rows, dim=2))
        if self.conv.bias is not None:
            out = out + self.conv.bias[None, :, None, None]
        return out

    def dense(self, hypercolumn: Tensor) -> Tensor:
        return self.conv(hypercolumn)

"""Landmark regressor on frozen hypercolumns (protocol.md §4), factorised by layer.

The reference's ``IntermediateKeypointPredictor(C, nA, nI=50, softargmax_mul=100)`` (from DVE):

1. a 1×1 convolution ``C → nA·nI`` without bias, weights drawn from ``randn`` (std 1);
2. for each of the ``nA·nI`` maps a softmax over all H·W positions of ``softargmax_mul · map`` and the
   expected (x, y) on a ``linspace(-1, 1)`` grid (divided by the mass, which is 1);
3. a grouped 1×1 convolution (``groups = nA``, no bias): landmark ``k``'s (x, y) is a linear function of
   its own ``nI`` intermediate pairs laid out ``x1, y1, ..., x50, y50``, initialised like
   ``nn.Linear(2·nI, 2, bias=False)`` (uniform in ±1/√(2·nI)).

The intermediate points lie in [-1, 1]; the output is a linear map of them with no clamp (as in the
reference), so it lies in [-1, 1] only in practice, not by construction: ``|out| ≤ Σ|w|`` per row.

Step 1 is a :class:`~equinv.models.hypercolumn.FactorisedConv1x1`, so :meth:`KeypointRegressor.forward`
takes the per-layer maps at their own resolution and never builds the ``(B, C, 48, 48)`` hypercolumn;
:meth:`KeypointRegressor.forward_dense` takes a materialised hypercolumn and gives the same result.
``bench/factorised_head.py`` measures the difference (time and peak memory of a training step).

Example::

    hc = Hypercolumn(frozen_trunk("resnet50"), size=48)
    reg = KeypointRegressor(hc.channels, n_landmarks=5)
    with torch.no_grad():
        maps = hc.maps(images)                 # frozen, cacheable
    pred = reg(maps, 48)                       # (B, 5, 2) in normalised coordinates
    loss = regression_loss(pred, target)       # smooth_l1(10·pred, 10·gt)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equinv.models.hypercolumn import FactorisedConv1x1


def soft_argmax(maps: Tensor, mul: float = 100.0) -> Tensor:
    """Expected (x, y) of ``softmax(mul · map)`` over all H·W positions.

    Args:
        maps: ``(B, N, H, W)`` scores.
        mul: the softmax multiplier (inverse temperature).

    Returns:
        ``(B, N, 2)`` (x, y) on the ``linspace(-1, 1)`` grid of each axis (x along W, y along H).
    """
    b, n, h, w = maps.shape
    p = F.softmax(mul * maps.reshape(b, n, h * w), dim=-1).reshape(b, n, h, w)
    xs = torch.linspace(-1.0, 1.0, w, device=maps.device, dtype=maps.dtype)
    ys = torch.linspace(-1.0, 1.0, h, device=maps.device, dtype=maps.dtype)
    px, py = p.sum(2), p.sum(3)  # marginals over x (B, N, W) and over y (B, N, H)
    mass = px.sum(-1)
    x = (px * xs).sum(-1) / mass
    y = (py * ys).sum(-1) / mass
    return torch.stack([x, y], dim=-1)


class KeypointRegressor(nn.Module):
    """``IntermediateKeypointPredictor`` of the reference, evaluated factorised by layer.

    Args:
        channels: per-layer channels of the hypercolumn (``Hypercolumn.channels``), or one int.
        n_landmarks: annotated landmarks K (``nA``).
        n_heatmaps: intermediate heat-maps per landmark (``nI``, 50).
        softargmax_mul: softmax multiplier (100).
        init_std: std of the heat-map weights' normal init (1, the reference). With std 1 and ×100 the
            initial softmax is close to a hard argmax and learning is slow in short runs; a small std
            (e.g. 0.03) starts from soft maps (an equinv option, not the reference).
        input_scale: optional fixed per-channel factors (``ΣC`` values, in layer order) applied to the input
            maps before the heat-map convolution (a buffer, saved with the model; ``None``: none, the
            reference). :func:`channel_scale` makes them ``1/std`` of training features, so that sources
            whose channels are far from O(1) (spatial-softmax projections ~1/(H·W), NMF coefficients) start
            and learn like the hypercolumn the reference was built for.

    ``forward(maps, size)``: per-layer maps (each ``(B, C_l, h_l, w_l)``) → ``(B, K, 2)``; each layer is
    projected to ``K·nI`` maps at its own resolution, then upsampled bilinearly to ``size``² and summed.
    ``forward_dense(hypercolumn)``: the same on a materialised ``(B, C, size, size)`` hypercolumn.
    """

    def __init__(self, channels: Sequence[int] | int, n_landmarks: int, n_heatmaps: int = 50,
                 softargmax_mul: float = 100.0, init_std: float = 1.0, input_scale: Tensor | None = None,
                 bias: bool = False):
        super().__init__()
        self.init_std = float(init_std)
        channels = (channels,) if isinstance(channels, int) else tuple(channels)
        if input_scale is not None:
            input_scale = torch.as_tensor(input_scale, dtype=torch.float32).flatten()
            if input_scale.numel() != sum(channels):
                raise ValueError(f"input_scale has {input_scale.numel()} values for {sum(channels)} channels")
        self.register_buffer("input_scale", input_scale)
        self.n_landmarks, self.n_heatmaps, self.softargmax_mul = n_landmarks, n_heatmaps, float(softargmax_mul)
        self.heatmaps = FactorisedConv1x1(channels, n_landmarks * n_heatmaps, bias=False)
        self.regressor = nn.Conv2d(2 * n_landmarks * n_heatmaps, 2 * n_landmarks, kernel_size=1,
                                   groups=n_landmarks, bias=bias)
        self.reset_parameters()

    @property
    def channels(self) -> tuple[int, ...]:
        return self.heatmaps.channels

    def reset_parameters(self) -> None:
        """randn (std ``init_std``, 1 in the reference) heat-map weights; ``nn.Linear(2·nI, 2)`` init per group."""
        nn.init.normal_(self.heatmaps.weight, 0.0, self.init_std)
        # nn.Linear.reset_parameters: kaiming_uniform_(a=√5) with fan_in 2·nI = U(±1/√(2·nI)); the grouped
        # conv weight (2K, 2·nI, 1, 1) has the same fan_in, so this is each group's Linear init.
        nn.init.kaiming_uniform_(self.regressor.weight, a=math.sqrt(5))

    @torch.no_grad()
    def anchor_to(self, shape: Tensor) -> None:
        """Start from ``shape`` ``(K, 2)`` (normalised): the output is ``shape`` until the heat-maps are learnt.

        The grouped linear map starts at zero and its bias (``bias=True``) at ``shape``, so training moves the
        prediction away from the mean training shape only as far as the features justify (an equinv option
        for short runs and few labels; the reference has no bias and a random linear map).
        """
        if self.regressor.bias is None:
            raise ValueError("anchor_to needs a regressor built with bias=True")
        self.regressor.weight.zero_()
        self.regressor.bias.copy_(shape.reshape(-1).to(self.regressor.bias))

    def intermediate(self, heatmaps: Tensor) -> Tensor:
        """``(B, K·nI, H, W)`` heat-maps → ``(B, K·nI, 2)`` soft-argmax points in [-1, 1]."""
        return soft_argmax(heatmaps, self.softargmax_mul)

    def _regress(self, heatmaps: Tensor) -> Tensor:
        pts = self.intermediate(heatmaps)  # (B, K·nI, 2): landmark k owns rows k·nI .. (k+1)·nI - 1
        b = pts.shape[0]
        flat = pts.reshape(b, -1, 1, 1)  # x1, y1, ..., x50, y50 per landmark, landmarks in order
        return self.regressor(flat).reshape(b, self.n_landmarks, 2)

    def _scaled(self, maps: Sequence[Tensor]) -> list[Tensor]:
        if self.input_scale is None:
            return list(maps)
        parts = torch.split(self.input_scale, list(self.channels))
        return [m * s.to(m.dtype).view(1, -1, 1, 1) for m, s in zip(maps, parts, strict=True)]

    def forward(self, maps: Sequence[Tensor] | Tensor, size: int = 48) -> Tensor:
        if torch.is_tensor(maps):
            maps = [maps]
        return self._regress(self.heatmaps(self._scaled(maps), size))

    def forward_dense(self, hypercolumn: Tensor) -> Tensor:
        if self.input_scale is not None:
            hypercolumn = hypercolumn * self.input_scale.to(hypercolumn.dtype).view(1, -1, 1, 1)
        return self._regress(self.heatmaps.dense(hypercolumn))


@torch.no_grad()
def channel_std(batches, channels: Sequence[int]) -> Tensor:
    """Std of every input channel over the maps of ``batches`` (each a per-layer list of maps).

    Statistics are accumulated in float64 over all images and positions of each layer's map at its own
    resolution. Only features are read, never labels.
    """
    channels = tuple(channels)
    s1 = torch.zeros(sum(channels), dtype=torch.float64)
    s2 = torch.zeros_like(s1)
    counts = torch.zeros_like(s1)
    for maps in batches:
        flat = []
        for m in maps:
            m = m.detach().to("cpu", torch.float64)
            flat.append((m.sum((0, 2, 3)), (m * m).sum((0, 2, 3)),
                         torch.full((m.shape[1],), float(m.shape[0] * m.shape[2] * m.shape[3]), dtype=torch.float64)))
        s1 += torch.cat([f[0] for f in flat])
        s2 += torch.cat([f[1] for f in flat])
        counts += torch.cat([f[2] for f in flat])
    if not bool((counts > 0).all()):
        raise ValueError("channel statistics need at least one batch")
    mean = s1 / counts
    return (s2 / counts - mean * mean).clamp_min(0).sqrt().float()


def scale_from_std(std: Tensor, eps: float = 1e-12) -> Tensor:
    """``1/std`` per channel; a constant channel (std ≤ ``eps``) keeps factor 1."""
    return torch.where(std > eps, 1.0 / std.clamp_min(eps), torch.ones_like(std)).float()


def channel_scale(batches, channels: Sequence[int], eps: float = 1e-12) -> Tensor:
    """``1/std`` of every input channel over the maps of ``batches`` (:func:`channel_std`, :func:`scale_from_std`)."""
    return scale_from_std(channel_std(batches, channels), eps)


def fan_in_init_std(std: Tensor, input_scale: Tensor | None = None) -> float:
    """Heat-map init std that makes the initial heat-map logits vary by about 1 across locations.

    With i.i.d. ``N(0, σ²)`` weights a heat-map's logit ``Σ_c w_c x_c`` varies across locations with std
    ``σ·√(Σ_c var_c)`` (channels taken as uncorrelated), so ``σ = 1/√(Σ_c var_c)`` of the regressor's input
    (after ``input_scale``). The reference's ``σ = 1`` gives a 960-channel hypercolumn of unit channels
    logits of std ~30, i.e. near-hard argmax maps of random locations at the start.
    """
    s = std.double() * (input_scale.double() if input_scale is not None else 1.0)
    total = float((s * s).sum())
    if not total > 0:
        raise ValueError("fan-in heat-map init: every input channel is constant")
    return 1.0 / math.sqrt(total)


def regression_loss(pred: Tensor, target: Tensor, visible: Tensor | None = None) -> Tensor:
    """``smooth_l1(10·pred, 10·gt)`` (β = 1, mean) (protocol §4).

    With ``visible`` (``(B, K)`` bool), invisible points have both pred and gt set to 0, so they still
    count in the mean's denominator (the reference's CUB loss).
    """
    if visible is not None:
        m = visible[..., None].to(pred.dtype)
        pred, target = pred * m, target * m
    return F.smooth_l1_loss(10.0 * pred, 10.0 * target, beta=1.0)

"""The figure-ground head of :mod:`equinv.evaluate.segmentation`: data container, head, training, IoU.

The head is one 1×1 convolution to a single logit over the hypercolumn
(:class:`~equinv.models.hypercolumn.FactorisedConv1x1`, so the ``C × 48 × 48`` hypercolumn is never built),
zero-initialised, at the grid (48), reading channels standardised with the training subset's mean and std
(:class:`SegmentationHead`). Loss: BCE-with-logits against the mask coverage area-averaged to the grid (soft
targets); Adam(lr, wd), batch 32, CosineAnnealingLR(T_max = epochs) stepped after each epoch. Prediction: the grid
logits upsampled bilinearly to the view, foreground where logit > 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from equinv.evaluate.epochs import EpochLoop
from equinv.features.cache import FeatureSet
from equinv.features.stats import prepare_input
from equinv.models.hypercolumn import FactorisedConv1x1


# ----------------------------------------------------------------------------- metric
def iou(pred: Tensor, gt: Tensor) -> Tensor:
    """Foreground IoU per image of bool ``(N, H, W)`` masks: ``(N,)`` float; 1 where both are empty."""
    pred, gt = pred.bool().flatten(1), gt.bool().flatten(1)
    inter = (pred & gt).sum(1).double()
    union = (pred | gt).sum(1).double()
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(union))


# ----------------------------------------------------------------------------- data
@dataclass
class MaskedSet:
    """One dataset ready for the head: masks plus cached features (frozen) or view images (fine-tuning).

    Attributes:
        spec: the dataset spec (as given, ``masks=`` included).
        coverage: ``(N, S, S)`` uint8 mask coverage of the final view (0..255; foreground > 127).
        stats: input normalisation of its kind.
        features: cached frozen maps (frozen mode).
        images: ``(N, 3, S, S)`` uint8 final views (fine-tuning).
    """

    spec: str
    coverage: Tensor
    stats: str
    features: FeatureSet | None = None
    images: Tensor | None = None
    _targets: Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return self.coverage.shape[0]

    @property
    def gt(self) -> Tensor:
        return self.coverage > 127

    def maps(self, idx, device, hc: nn.Module | None = None) -> list[Tensor]:
        """Per-layer maps of rows ``idx``: read from the cache, or computed by ``hc`` (fine-tuning)."""
        if hc is None:
            return self.features.batch(idx, device)
        x = self.images[torch.as_tensor(np.asarray(idx, dtype=np.int64))]
        return hc.maps(prepare_input(x, None, self.stats, device))

    def targets(self, idx, grid: int, device) -> Tensor:
        """Soft ``(B, 1, grid, grid)`` targets: the coverage area-averaged to the grid (computed once per grid)."""
        if self._targets is None or self._targets.shape[-1] != grid:
            c = self.coverage.float().div(255.0)[:, None]
            self._targets = torch.cat([F.interpolate(c[s : s + 256], size=(grid, grid), mode="area")
                                       for s in range(0, len(c), 256)])
        return self._targets[torch.as_tensor(np.asarray(idx, dtype=np.int64))].to(device)

    def on_device(self, device, max_bytes: int = 2 << 30) -> MaskedSet:
        """A copy whose cached features sit on ``device`` in float32 (converted once, not every step),
        when they take at most ``max_bytes``; else ``self``."""
        f = self.features
        if f is None or sum(4 * int(np.prod(m.shape)) for m in f.maps) > max_bytes:
            return self
        maps = [torch.as_tensor(np.asarray(m)).to(device).float() for m in f.maps]
        fs = FeatureSet(maps, f.landmarks, f.visible, f.eyes, f.spec, f.backbone_images)
        return MaskedSet(self.spec, self.coverage, self.stats, fs, self.images)

    def subset(self, rows: np.ndarray) -> MaskedSet:
        """The rows ``rows`` of this set."""
        t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        fs = None if self.features is None else self.features.subset(rows)
        return MaskedSet(self.spec, self.coverage[t], self.stats, fs,
                         None if self.images is None else self.images[t])


# ----------------------------------------------------------------------------- head
class SegmentationHead(torch.nn.Module):
    """A 1×1 convolution to one logit over per-channel standardised hypercolumn features.

    The standardisation (training-set channel mean and std, fixed buffers) is an affine map per channel, so
    the head is still a single 1×1 convolution of the raw hypercolumn (:meth:`as_conv` folds it). It only
    conditions the optimisation: raw layers differ in scale and channel spread, and standardised features
    let Adam fit the same model class much better in few steps. The convolution starts at zero (p = ½).
    """

    def __init__(self, channels, means: list[Tensor] | None = None, stds: list[Tensor] | None = None):
        super().__init__()
        self.conv = FactorisedConv1x1(channels, 1)
        torch.nn.init.zeros_(self.conv.conv.weight)
        torch.nn.init.zeros_(self.conv.conv.bias)
        for i, c in enumerate(self.conv.channels):
            mu = torch.zeros(c) if means is None else means[i].float().reshape(c)
            sd = torch.ones(c) if stds is None else stds[i].float().reshape(c)
            self.register_buffer(f"mean{i}", mu.clone())
            self.register_buffer(f"inv_std{i}", 1.0 / sd.clamp_min(1e-4))

    def folded(self) -> tuple[Tensor, Tensor]:
        """Weight ``(1, C, 1, 1)`` and bias ``(1,)`` of the same map on raw features (differentiable)."""
        k = len(self.conv.channels)
        inv = torch.cat([getattr(self, f"inv_std{i}") for i in range(k)])
        mu = torch.cat([getattr(self, f"mean{i}") for i in range(k)])
        w = self.conv.conv.weight.flatten(1) * inv  # (1, C)
        return w.reshape_as(self.conv.conv.weight), self.conv.conv.bias - (w * mu).sum(1)

    def forward(self, maps, size: int) -> Tensor:
        # the standardisation is folded into the weights: no per-pixel work on the (large) feature maps
        w, b = self.folded()
        return torch.func.functional_call(self.conv, {"conv.weight": w, "conv.bias": b}, (maps, size))

    @torch.no_grad()
    def as_conv(self) -> FactorisedConv1x1:
        """The equivalent plain :class:`FactorisedConv1x1` on raw features (standardisation folded in)."""
        w, b = self.folded()
        out = FactorisedConv1x1(self.conv.channels, 1).to(w.device)
        out.conv.weight.copy_(w)
        out.conv.bias.copy_(b)
        return out


@torch.no_grad()
def channel_stats(data: MaskedSet, device, hc: nn.Module | None = None, batch: int = 64
                  ) -> tuple[list[Tensor], list[Tensor]]:
    """Per-layer channel means and stds of ``data``'s maps (over images and native pixels), in float64."""
    if hc is not None:
        hc.eval()
    sums = sq = None
    count = [0]
    for s in range(0, len(data), batch):
        maps = data.maps(np.arange(s, min(s + batch, len(data))), device, hc)
        if sums is None:
            sums = [torch.zeros(m.shape[1], dtype=torch.float64, device=device) for m in maps]
            sq = [torch.zeros_like(t) for t in sums]
            count = [0] * len(maps)
        for i, m in enumerate(maps):
            m = m.double()
            sums[i] += m.sum((0, 2, 3))
            sq[i] += m.pow(2).sum((0, 2, 3))
            count[i] += m.shape[0] * m.shape[2] * m.shape[3]
    means = [t / n for t, n in zip(sums, count, strict=True)]
    stds = [(q / n - mu.pow(2)).clamp_min(0).sqrt() for q, n, mu in zip(sq, count, means, strict=True)]
    return means, stds


@torch.no_grad()
def predict_masks(head: SegmentationHead, data: MaskedSet, device, *, grid: int = 48, size: int = 96,
                  batch: int = 64, hc: nn.Module | None = None) -> Tensor:
    """``(N, size, size)`` bool foreground: grid logits upsampled bilinearly, thresholded at 0 (on the CPU)."""
    head.eval()
    if hc is not None:
        hc.eval()
    out = []
    for s in range(0, len(data), batch):
        idx = np.arange(s, min(s + batch, len(data)))
        logit = head(data.maps(idx, device, hc), grid).float()
        logit = F.interpolate(logit, size=(size, size), mode="bilinear", align_corners=False)
        out.append((logit[:, 0] > 0).cpu())
    return torch.cat(out)


def train_head(train: MaskedSet, channels, *, epochs: int, lr: float, wd: float, batch_size: int = 32,
               tile: int = 1, val: MaskedSet | None = None, device="cpu", seed: int = 0, grid: int = 48,
               size: int = 96, hc: nn.Module | None = None, trunk_lr_mult: float = 0.1,
               log=None) -> tuple[SegmentationHead, dict]:
    """Train the logit head (and, given ``hc``, the trunk under it, modified in place); returns the kept head.

    Fine-tuning keeps ``hc`` in eval mode (BatchNorm statistics fixed, see :mod:`equinv.evaluate.segmentation`).
    The epoch with the best mean validation IoU is kept (the trunk's weights of that epoch too); the last
    epoch without ``val``. ``info["backbone_images"]`` counts images that went through the trunk here.
    """
    g = torch.Generator().manual_seed(seed)
    train = train.on_device(device)
    if val is not None and hc is None:
        val = val.on_device(device)
    means, stds = channel_stats(train, device, hc)
    passed = [len(train) if hc is not None else 0]
    head = SegmentationHead(channels, means, stds).to(device)
    groups = [{"params": list(head.parameters()), "lr": lr}]
    trunk_params = [p for p in hc.parameters() if p.is_floating_point()] if hc is not None else []
    if trunk_params:
        groups.append({"params": trunk_params, "lr": lr * trunk_lr_mult})
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 1e-3)

    def run_epoch() -> float:
        head.train()
        order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(tile)]).numpy()
        total, steps = 0.0, 0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            logit = head(train.maps(idx, device, hc), grid)
            loss = F.binary_cross_entropy_with_logits(logit.float(), train.targets(idx, grid, device))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            passed[0] += len(idx) if hc is not None else 0
            total += loss.item()
            steps += 1
        return total / max(1, steps)

    def validate() -> float:
        passed[0] += len(val) if hc is not None else 0
        return float(iou(predict_masks(head, val, device, grid=grid, size=size, hc=hc), val.gt).mean())

    def restore(state) -> None:
        head.load_state_dict(state[0])
        if hc is not None:
            hc.load_state_dict(state[1])

    for p in trunk_params:
        p.requires_grad_(True)
    try:
        info = EpochLoop(epochs, run_epoch, lambda: opt.param_groups[0]["lr"], sched.step,
                         lambda: (head.state_dict(), hc.state_dict() if hc is not None else None), restore,
                         step_first=False, validate=validate if val is not None else None, val_key="val_iou",
                         higher=True, log=log).run()
    finally:
        for p in trunk_params:
            p.requires_grad_(False)
        if hc is not None:
            hc.eval()
    return head, {**info, "selection": "best val IoU" if val is not None else "last epoch",
                  "backbone_images": passed[0]}


def baselines(train_gt: Tensor, test_gt: Tensor) -> dict:
    """IoU of two data-blind predictions: every pixel foreground, and the mean training mask > ½."""
    full = torch.ones_like(test_gt)
    prior = (train_gt.float().mean(0) > 0.5).expand_as(test_gt)
    return {"all_foreground": float(iou(full, test_gt).mean()), "mean_mask": float(iou(prior, test_gt).mean())}

"""Training the landmark regressor (protocol §4) on cached features, or end to end through its source.

:func:`train_regressor` trains a :class:`~equinv.models.regressor.KeypointRegressor` on a
:class:`~equinv.features.cache.FeatureSet`: Adam(lr, betas (0.5, 0.999)), batch 32,
``smooth_l1(10·pred, 10·gt)`` on ``kp_n = 2·kp/(W−1) − 1`` (W = 96, the final view),
CosineAnnealingLR(T_max = epochs, eta_min = lr·8e-4) stepped at the *start* of each epoch as the reference
does (so epoch 1 already runs at η(1)); the epoch with the best validation metric (IOD error when the data has
eye indices, else PCK) is kept, the last epoch without a validation set. :func:`finetune_regressor` trains the
source's weights too (appendix A.2).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from equinv.data.dataset import LandmarkDataset, final_view
from equinv.errors import InputError
from equinv.evaluate.epochs import EpochLoop
from equinv.evaluate.metrics import evaluate_predictions, score
from equinv.features.cache import FeatureSet, normalise_points
from equinv.features.stats import prepare_input
from equinv.models.regressor import KeypointRegressor, channel_std, regression_loss

INPUT_SCALES = ("auto", "none", "std")
FAN_IN = "fan-in"


def resolve_heatmap_init(value: float | str) -> float | str:
    """A positive heat-map init std, or ``"fan-in"``; anything else is an :class:`InputError`."""
    if isinstance(value, str):
        if value.strip().lower() == FAN_IN:
            return FAN_IN
        try:
            value = float(value)
        except ValueError:
            raise InputError(f"--heatmap-init-std {value!r}: give a positive number or {FAN_IN}") from None
    if not (value > 0 and math.isfinite(value)):
        raise InputError(f"--heatmap-init-std {value!r}: give a positive number or {FAN_IN}")
    return float(value)


def resolve_input_scale(mode: str, source_kind: str) -> str:
    """``auto`` → ``std`` for the projected / NMF sources, ``none`` otherwise; other modes as given.

    The reference regressor (randn weights, softmax ×100) assumes O(1) channels like a ResNet's; a
    spatial-softmax projection gives values ~1/(H·W) and NMF coefficients are on the scale of its factors,
    so with them every heat-map stays uniform for a short run and the prediction is the mean shape.
    """
    if mode not in INPUT_SCALES:
        raise InputError(f"unknown --input-scale {mode!r}; choose from {', '.join(INPUT_SCALES)}")
    if mode == "auto":
        return "std" if source_kind in ("projected", "nmf") else "none"
    return mode


def default_hparams(n: int | None) -> tuple[float, float]:
    """Protocol lr / wd: 1e-2 / 5e-2 with ≤ 100 annotations, else the faces' 1e-3 / 5e-4."""
    return (1e-2, 5e-2) if n is not None and n <= 100 else (1e-3, 5e-4)


def mean_shape(landmarks: Tensor, visible: Tensor) -> Tensor:
    """``(K, 2)`` mean of the visible training landmarks (the centre for a landmark never visible)."""
    w = visible.unsqueeze(-1).float()
    return (landmarks.float() * w).sum(0) / w.sum(0).clamp_min(1.0)


# ----------------------------------------------------------------------------- input statistics
def _spread(n: int, k: int) -> np.ndarray:
    """At most ``k`` evenly spaced indices of ``range(n)``."""
    return np.unique(np.linspace(0, n - 1, min(n, k)).round().astype(np.int64))


def feature_std(fs: FeatureSet, channels, max_rows: int = 2048, batch: int = 256) -> Tensor:
    """Per-channel std of ``fs``'s maps over at most ``max_rows`` evenly spaced rows."""
    rows = _spread(len(fs), max_rows)
    return channel_std((fs.batch(rows[s : s + batch], "cpu") for s in range(0, len(rows), batch)), channels)


@torch.no_grad()
def live_feature_std(source, ds: LandmarkDataset, rows, stats: str, device, max_rows: int = 512,
                     batch: int = 64) -> Tensor:
    """:func:`feature_std` of the source's live maps (fine-tuning: the initial weights)."""
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    rows = rows[_spread(len(rows), max_rows)]
    was_training = source.training
    source.eval()
    try:
        std = channel_std((source.maps(live_batch(ds, rows[s : s + batch], stats, device)[0])
                           for s in range(0, len(rows), batch)), source.channels)
    finally:
        source.train(was_training)
    return std


def input_scaling(mode: str, heatmap_init: float | str, source_kind: str, channel_std_fn
                  ) -> tuple[str, Tensor | None, float]:
    """The resolved ``--input-scale`` mode, the fixed per-channel input factors (or ``None``) and the heat-map
    init std; ``channel_std_fn()`` gives the training features' per-channel std, called only when needed."""
    from equinv.models.regressor import fan_in_init_std, scale_from_std

    scale_mode = resolve_input_scale(mode, source_kind)
    in_scale, init_std = None, resolve_heatmap_init(heatmap_init)
    if scale_mode == "std" or init_std == FAN_IN:
        std = channel_std_fn()
        in_scale = scale_from_std(std) if scale_mode == "std" else None
        if init_std == FAN_IN:
            init_std = fan_in_init_std(std, in_scale)
    return scale_mode, in_scale, init_std


# ----------------------------------------------------------------------------- one head
def new_regressor(channels, n_landmarks: int, seed: int, device, anchor: Tensor | None = None,
                  **kwargs) -> KeypointRegressor:
    """A :class:`KeypointRegressor` initialised from ``seed`` (the global RNG is left as it was); with ``anchor``
    (a ``(K, 2)`` normalised shape) it starts by predicting that shape (:meth:`KeypointRegressor.anchor_to`)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reg = KeypointRegressor(channels, n_landmarks, bias=anchor is not None, **kwargs)
    if anchor is not None:
        reg.anchor_to(anchor)
    return reg.to(device)


def _optimizer(groups, lr: float, wd: float, epochs: int):
    opt = torch.optim.Adam(groups, lr=lr, betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
    return opt, torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 8e-4)


def regressor_step(reg: KeypointRegressor, opt: torch.optim.Optimizer, maps, gt: Tensor, vis: Tensor,
                   grid: int) -> float:
    """One optimiser step of the protocol loss on a batch; returns the loss value."""
    loss = regression_loss(reg(maps, grid), gt, None if bool(vis.all()) else vis)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


@torch.no_grad()
def predict(reg: KeypointRegressor, fs: FeatureSet, device, batch: int = 64, grid: int = 48) -> Tensor:
    """``(N, K, 2)`` normalised predictions for every row of ``fs`` (on the CPU)."""
    reg.eval()
    out = [reg(fs.batch(range(s, min(s + batch, len(fs))), device), grid).float().cpu()
           for s in range(0, len(fs), batch)]
    return torch.cat(out)


def train_regressor(train: FeatureSet, channels, *, epochs: int, lr: float, wd: float, batch_size: int = 32,
                    tile: int = 1, val: FeatureSet | None = None, device="cpu", seed: int = 0, grid: int = 48,
                    image_size: int = 96, alpha: float = 0.05, n_heatmaps: int = 50, init_std: float = 1.0,
                    softargmax_mul: float = 100.0, input_scale: Tensor | None = None, anchor: Tensor | None = None,
                    log=None) -> tuple[KeypointRegressor, dict]:
    """Train a :class:`KeypointRegressor` on cached features; returns the kept model and a training log.

    ``tile`` repeats the training rows per epoch (the reference's limited-annotation sampler). The model of
    the epoch with the best validation score is returned (the last epoch without ``val``). ``input_scale``:
    fixed per-channel factors (``scale_from_std(feature_std(...))``) or ``None``; ``anchor``: start from this
    ``(K, 2)`` shape (:func:`new_regressor`), which is then itself a candidate of the validation (epoch 0: kept
    when no epoch validates better).
    """
    g = torch.Generator().manual_seed(seed)
    reg = new_regressor(channels, train.landmarks.shape[1], seed, device, anchor=anchor, n_heatmaps=n_heatmaps,
                        init_std=init_std, softargmax_mul=softargmax_mul, input_scale=input_scale)
    opt, sched = _optimizer(reg.parameters(), lr, wd, epochs)

    def run_epoch() -> float:
        reg.train()
        order = torch.cat([torch.randperm(len(train), generator=g) for _ in range(tile)]).numpy()
        losses = [regressor_step(reg, opt, train.batch(idx, device), train.landmarks[idx].to(device),
                                 train.visible[idx].to(device), grid)
                  for idx in (order[s : s + batch_size] for s in range(0, len(order), batch_size))]
        return sum(losses) / max(1, len(losses))

    def validate() -> float:
        return score(evaluate_predictions(predict(reg, val, device, grid=grid), val, image_size=image_size,
                                          alpha=alpha))

    info = EpochLoop(epochs, run_epoch, lambda: opt.param_groups[0]["lr"], sched.step, reg.state_dict,
                     reg.load_state_dict, validate=validate if val is not None else None,
                     validate_start=anchor is not None, log=log).run()
    return reg, {**info, "selection": "best val" if val is not None else "last epoch"}


# ----------------------------------------------------------------------------- fine-tuning
def live_batch(ds: LandmarkDataset, rows, stats: str, device, tps: bool = False,
               generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Normalised final-view inputs, ``[-1, 1]`` landmarks and visibility of ``ds`` rows (TPS-warped if ``tps``)."""
    from equinv.augment.tps import random_tps

    b = ds.__getitems__([int(r) for r in rows])
    if tps:
        img, lm, vis = random_tps(b["image"].float().div(255.0), b["landmarks"], b["visible"], "paper", generator)
        b = {"image": img.clamp(0, 1), "landmarks": lm, "visible": vis}
    view = final_view(b, ds.pre)
    x = prepare_input(view["image"], None, stats, device)
    return x, normalise_points(view["landmarks"].float(), ds.pre.size), view["visible"]


def predict_live(reg: KeypointRegressor, source, ds: LandmarkDataset, stats: str, device, batch: int = 64,
                 grid: int = 48) -> Tensor:
    """``(N, K, 2)`` normalised predictions through the (fine-tuned) ``source`` for every image of ``ds``."""
    reg.eval()
    source.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ds), batch):
            x, _, _ = live_batch(ds, range(s, min(s + batch, len(ds))), stats, device)
            out.append(reg(source.maps(x), grid).float().cpu())
    return torch.cat(out)


def finetune_regressor(source, ds: LandmarkDataset, rows, labels: FeatureSet, *, epochs: int, lr: float, wd: float,
                       lr_mult: float = 0.1, batch_size: int = 32, tile: int = 1, tps: bool = False, val=None,
                       stats: str = "face", device="cpu", seed: int = 0, grid: int = 48, image_size: int = 96,
                       alpha: float = 0.05, n_heatmaps: int = 50, init_std: float = 1.0,
                       softargmax_mul: float = 100.0, input_scale: Tensor | None = None, anchor: Tensor | None = None,
                       log=None) -> tuple[KeypointRegressor, dict]:
    """Train the regressor and the source's weights end to end (appendix A.2); the source is modified in place.

    The backbone runs on every batch (train mode: BatchNorm statistics adapt) at ``lr · lr_mult``; with
    ``tps`` a fresh TPS warp is drawn per image per step, as the reference's limited-annotation loader does.
    ``val = (dataset, labels)`` selects the epoch (the source's weights of that epoch are restored too).
    """
    g = torch.Generator().manual_seed(seed)
    reg = new_regressor(source.channels, labels.landmarks.shape[1], seed, device, anchor=anchor, n_heatmaps=n_heatmaps,
                        init_std=init_std, softargmax_mul=softargmax_mul, input_scale=input_scale)
    params = [p for p in source.parameters() if p.is_floating_point()]
    opt, sched = _optimizer([{"params": reg.parameters(), "lr": lr}, {"params": params, "lr": lr * lr_mult}],
                            lr, wd, epochs)
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    passed = [0]

    def run_epoch() -> float:
        reg.train()
        source.train()
        order = torch.cat([torch.randperm(len(rows), generator=g) for _ in range(tile)]).numpy()
        total, steps = 0.0, 0
        for s in range(0, len(order), batch_size):
            x, gt, vis = live_batch(ds, rows[order[s : s + batch_size]], stats, device, tps, g)
            total += regressor_step(reg, opt, source.maps(x), gt.to(device), vis.to(device), grid)
            passed[0] += x.shape[0]
            steps += 1
        return total / max(1, steps)

    def validate() -> float:
        vds, vlab = val
        passed[0] += len(vds)
        pred = predict_live(reg, source, vds, stats, device, grid=grid)
        return score(evaluate_predictions(pred, vlab, image_size=image_size, alpha=alpha))

    def restore(state) -> None:
        reg.load_state_dict(state[0])
        source.load_state_dict(state[1])

    for p in params:
        p.requires_grad_(True)
    try:
        info = EpochLoop(epochs, run_epoch, lambda: opt.param_groups[0]["lr"], sched.step,
                         lambda: (reg.state_dict(), source.state_dict()), restore,
                         validate=validate if val is not None else None, log=log).run()
    finally:
        for p in params:
            p.requires_grad_(False)
        source.eval()
    return reg, {**info, "selection": "best val" if val is not None else "last epoch", "backbone_images": passed[0]}

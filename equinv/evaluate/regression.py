"""Landmark regression on frozen features (protocol §4): cache features once, then train the regressor.

Pipeline of :func:`run_regression`:

1. Every image of the train / val / test specs goes through the frozen trunk **once**; its per-layer native
   maps (the factorised hypercolumn, :meth:`Hypercolumn.maps`) are stored in fp16 in memory or, with
   ``cache_dir``, in ``.npy`` memmaps under it (reused by a later run with the same key). Epochs then only
   read these tensors, so the backbone is never run again (``FeatureSet.backbone_images`` counts the images
   that went through the trunk; ``tests/evaluate/test_regression.py`` checks it).
2. :class:`~equinv.models.regressor.KeypointRegressor` is trained on them: Adam(lr, betas (0.5, 0.999)),
   batch 32, ``smooth_l1(10·pred, 10·gt)`` on ``kp_n = 2·kp/(W−1) − 1`` (W = 96, the final view),
   CosineAnnealingLR(T_max = epochs, eta_min = lr·8e-4) stepped at the *start* of each epoch as the reference
   does (so epoch 1 already runs at η(1)).
3. The epoch with the best validation metric (IOD error when the data has eye indices, else PCK) is kept;
   without ``val`` the last epoch is used (the reference faces have no validation split). The test specs
   are only evaluated with the kept weights, never used for selection.

Limited annotations (``n_train``): a seeded subset of N training images per repeat (the reference draws
without a seed, §8.12), tiled ``floor(min(1000, |train|)/N)`` times per epoch as the reference sampler does;
lr 1e-2 / wd 5e-2 by default when N ≤ 100, else 1e-3 / 5e-4. With ``tps_aug`` each selected image also gets
``tps_copies`` fixed TPS-warped copies (the reference ``WarperSingle`` "paper" preset, on the 136-px canvas
before the centre crop, landmarks moved with the warp). The reference draws a fresh warp every epoch; this
would mean running the backbone every epoch, so a fixed set of copies is precomputed instead (the copies
are cycled through the tiled epoch).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor
from tqdm.auto import tqdm

from equinv import coords as C
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate.descriptors import prepare_input, stats_for_kind
from equinv.evaluate.metrics import iod_error, paper_pck, pck, per_landmark_errors
from equinv.evaluate.sources import DVESource, build_source, native_side, parse_taps
from equinv.models.regressor import KeypointRegressor, channel_std, fan_in_init_std, regression_loss, scale_from_std
from equinv.report.record import software_versions


@dataclass
class RegressionConfig:
    """Everything that defines a regression evaluation (written into the result JSON).

    ``lr`` / ``wd`` ``None`` pick the protocol defaults (1e-3 / 5e-4; 1e-2 / 5e-2 when N ≤ 100).
    ``n_train`` ``[None]`` means all annotations. ``layers``: the reference ``--layer`` (taps deepest first);
    ``taps`` overrides it (e.g. ``["layer3"]``, a single layer as in Table 3). ``source``: ``hypercolumn``,
    ``projected`` (with ``projector``), ``nmf`` (with ``parts``) or ``dve`` (``backbone`` = a DVE run), see
    :mod:`equinv.evaluate.sources`. ``grid`` ``None``: 48, or the map's native side for a single-map source
    (single layer, DVE) as the reference does (§9: single layers are not resized). ``finetune``: train the
    backbone too (appendix A.2), at ``lr · finetune_lr_mult``; features are then recomputed every step.
    ``input_scale``: ``none`` (the reference: features as they come), ``std`` (each input channel divided by
    its standard deviation over the training features, a fixed factor computed once, no labels used) or
    ``auto`` (``std`` for the ``projected`` and ``nmf`` sources, whose channels are far from O(1); ``none``
    for the hypercolumn and DVE, the reference's cases), see :func:`resolve_input_scale`. ``proj_readout``:
    regress on the projector's ``linear`` output ``wᵀΦ + b`` (default; the paper's ``Φ'``) or on its
    ``output`` (the reference projector's spatial softmax maps, its matching descriptor).
    """

    train: str
    test: list[str]
    val: str | None = None
    backbone: str = "random"
    arch: str = "resnet18"
    layers: int = 4
    source: str = "hypercolumn"
    taps: list[str] | None = None
    projector: str | None = None
    parts: str | None = None
    finetune: bool = False
    finetune_lr_mult: float = 0.1
    epochs: int = 50
    lr: float | None = None
    wd: float | None = None
    batch_size: int = 32
    n_train: list[int | None] = field(default_factory=lambda: [None])
    repeats: int = 1
    tile_to: int = 1000
    tps_aug: bool = False
    tps_copies: int = 8
    seed: int = 0
    image_size: int = 96
    grid: int | None = None
    n_heatmaps: int = 50
    heatmap_init_std: float | str = 1.0  # or "fan-in" (:func:`fan_in_init_std` of the training features)
    softargmax_mul: float = 100.0
    paper_pck: bool = False
    eval_batch_size: int = 32
    pck_alpha: float = 0.05
    device: str | None = None
    cache_dir: str | None = None
    feature_batch: int = 64
    input_scale: str = "auto"
    proj_readout: str = "linear"


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
        std = channel_std((source.maps(_live_batch(ds, rows[s : s + batch], stats, device)[0])
                           for s in range(0, len(rows), batch)), source.channels)
    finally:
        source.train(was_training)
    return std


def mean_shape(landmarks: Tensor, visible: Tensor) -> Tensor:
    """``(K, 2)`` mean of the visible training landmarks (the centre for a landmark never visible)."""
    w = visible.unsqueeze(-1).float()
    return (landmarks.float() * w).sum(0) / w.sum(0).clamp_min(1.0)


def default_hparams(n: int | None) -> tuple[float, float]:
    """Protocol lr / wd: 1e-2 / 5e-2 with ≤ 100 annotations, else the faces' 1e-3 / 5e-4."""
    return (1e-2, 5e-2) if n is not None and n <= 100 else (1e-3, 5e-4)


def _weights(backbone: str | None):
    return None if backbone in (None, "", "random", "none") else backbone


# ----------------------------------------------------------------------------- features
@dataclass
class FeatureSet:
    """Cached frozen features of one dataset.

    Attributes:
        maps: per-tap ``(N, C_l, h_l, w_l)`` fp16 tensors (or numpy memmaps), in tap order.
        landmarks: ``(N, K, 2)`` normalised ``[-1, 1]`` coordinates of the final view.
        visible: ``(N, K)`` bool.
        eyes: inter-ocular indices or ``None``.
        spec: the dataset spec.
        backbone_images: images passed through the trunk to build this set (0 when read from the cache).
    """

    maps: list
    landmarks: Tensor
    visible: Tensor
    eyes: tuple[int, int] | None
    spec: str
    backbone_images: int = 0

    def __len__(self) -> int:
        return self.landmarks.shape[0]

    def batch(self, idx, device) -> list[Tensor]:
        """The maps of rows ``idx`` as float32 tensors on ``device``."""
        idx = np.asarray(idx, dtype=np.int64)
        out = []
        for m in self.maps:
            if isinstance(m, np.ndarray):
                order = np.argsort(idx, kind="stable")
                rows = np.empty((len(idx), *m.shape[1:]), m.dtype)
                rows[order] = m[idx[order]]
                t = torch.from_numpy(rows)
            else:
                t = m[torch.from_numpy(idx)]
            out.append(t.to(device, non_blocking=True).float())
        return out


def _feature_key(spec: str, trunk_id: str, taps, pre: Preprocess, extra: str = "") -> str:
    h = hashlib.sha256(json.dumps([spec, trunk_id, list(taps), pre.as_dict(), extra], sort_keys=True).encode())
    return h.hexdigest()[:20]


@torch.no_grad()
def extract_features(ds: LandmarkDataset, source, stats: str, device, *, batch: int = 64,
                     spec: str = "", eyes=None, cache_dir: str | Path | None = None, cache_key: str | None = None,
                     rows: np.ndarray | None = None, tps_copies: int = 0, generator: torch.Generator | None = None,
                     progress: bool = False) -> FeatureSet:
    """Run the frozen ``source`` (a Hypercolumn or any :mod:`~equinv.evaluate.sources` source) once over
    ``ds`` (or its ``rows``) and keep its fp16 native maps.

    With ``tps_copies > 0`` every image is instead represented by that many TPS-warped copies (warped on the
    canvas before the centre crop, landmarks moved by the warp and marked invisible where lost); the rows are
    ordered image-major (copies of image 0 first).
    """
    from equinv.augment.tps import random_tps

    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    copies = max(1, tps_copies)
    n = len(rows) * copies
    pre = ds.pre
    with torch.no_grad():
        probe = source.maps(torch.zeros(1, 3, pre.size, pre.size, device=device))
    shapes = [(n, *p.shape[1:]) for p in probe]
    k = len(ds.names)

    target = None
    if cache_dir is not None and cache_key is not None:
        target = Path(cache_dir) / cache_key
        done = target / "done.json"
        if done.exists():
            maps = [np.load(target / f"tap{i}.npy", mmap_mode="r") for i in range(len(shapes))]
            lm = torch.from_numpy(np.load(target / "landmarks.npy"))
            vis = torch.from_numpy(np.load(target / "visible.npy"))
            if all(tuple(m.shape) == s for m, s in zip(maps, shapes, strict=True)) and lm.shape[0] == n:
                return FeatureSet(maps, lm, vis, eyes, spec, 0)
        target.mkdir(parents=True, exist_ok=True)
        maps = [open_memmap(target / f"tap{i}.npy", mode="w+", dtype=np.float16, shape=s) for i, s in enumerate(shapes)]
    else:
        maps = [torch.empty(s, dtype=torch.float16) for s in shapes]
    landmarks = torch.zeros(n, k, 2)
    visible = torch.zeros(n, k, dtype=torch.bool)

    passed = 0
    per = max(1, batch // copies)
    bar = tqdm(total=n, desc=f"features {spec}"[:60], unit="img", disable=not progress, leave=False)
    for s in range(0, len(rows), per):
        b = ds.__getitems__(rows[s : s + per].tolist())
        if tps_copies > 0:
            img = b["image"].float().div(255.0).repeat_interleave(copies, 0)
            lm = b["landmarks"].repeat_interleave(copies, 0)
            vis = b["visible"].repeat_interleave(copies, 0)
            img, lm, vis = random_tps(img, lm, vis, "paper", generator)
            b = {"image": img.clamp(0, 1), "landmarks": lm, "visible": vis}
        view = final_view(b, pre)
        x = prepare_input(view["image"], None, stats, device)
        out = source.maps(x)
        passed += x.shape[0]
        lo, hi = s * copies, s * copies + x.shape[0]
        for m, o in zip(maps, out, strict=True):
            o16 = o.to(torch.float16).cpu()
            if isinstance(m, np.ndarray):
                m[lo:hi] = o16.numpy()
            else:
                m[lo:hi] = o16
        landmarks[lo:hi] = C.points_to_norm(view["landmarks"].float(), pre.size, align_corners=True)
        visible[lo:hi] = view["visible"]
        bar.update(x.shape[0])
    bar.close()
    if target is not None:
        for m in maps:
            m.flush()
        np.save(target / "landmarks.npy", landmarks.numpy())
        np.save(target / "visible.npy", visible.numpy())
        (target / "done.json").write_text(json.dumps({"spec": spec, "n": n}))
    return FeatureSet(maps, landmarks, visible, eyes, spec, passed)


# ----------------------------------------------------------------------------- training
@torch.no_grad()
def predict(reg: KeypointRegressor, fs: FeatureSet, device, batch: int = 64, grid: int = 48) -> Tensor:
    """``(N, K, 2)`` normalised predictions for every row of ``fs`` (on the CPU)."""
    reg.eval()
    out = [reg(fs.batch(range(s, min(s + batch, len(fs))), device), grid).float().cpu()
           for s in range(0, len(fs), batch)]
    return torch.cat(out)


def evaluate_predictions(pred: Tensor, fs: FeatureSet, *, image_size: int = 96, alpha: float = 0.05,
                         paper: bool = False, eval_batch_size: int = 32) -> dict:
    """All metrics of normalised predictions against ``fs``'s ground truth.

    IOD error (when the data has eye indices) in normalised coordinates; correct PCK in the
    ``image_size``-px final view; the reference PCK with ``paper``.
    """
    gt, vis = fs.landmarks, fs.visible
    res: dict = {"n_images": len(fs)}
    if fs.eyes is not None:
        res["iod_error_percent"] = float(iod_error(pred, gt, fs.eyes, vis).mean())
        res["per_landmark"] = torch.nanmean(per_landmark_errors(pred, gt, fs.eyes, vis), 0).tolist()
    else:
        res["iod_error_percent"] = None
    pred_px, gt_px = (C.points_from_norm(t, image_size, align_corners=True) for t in (pred, gt))
    p = pck(pred_px, gt_px, vis, image_size, alpha)
    res["pck"] = p["pck"]
    res["pck_per_landmark"] = p["per_landmark"]
    if fs.eyes is None:
        res["per_landmark"] = p["per_landmark"]
    if paper:
        pp = paper_pck(pred, gt, vis, eval_batch_size, alpha)
        res["paper_pck"] = pp["pck"]
        res["paper_pck_per_landmark"] = pp["per_landmark"]
    return res


def _score(res: dict) -> float:
    """Lower is better: the IOD error, or −PCK without eye indices."""
    return res["iod_error_percent"] if res["iod_error_percent"] is not None else -res["pck"]


def regressor_step(reg: KeypointRegressor, opt: torch.optim.Optimizer, maps, gt: Tensor, vis: Tensor,
                   grid: int) -> float:
    """One optimiser step of the protocol loss on a batch; returns the loss value."""
    loss = regression_loss(reg(maps, grid), gt, None if bool(vis.all()) else vis)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss.item()


def train_regressor(train: FeatureSet, channels, *, epochs: int, lr: float, wd: float, batch_size: int = 32,
                    tile: int = 1, val: FeatureSet | None = None, device="cpu", seed: int = 0, grid: int = 48,
                    image_size: int = 96, alpha: float = 0.05, n_heatmaps: int = 50, init_std: float = 1.0,
                    softargmax_mul: float = 100.0, input_scale: Tensor | None = None,
                    log=None) -> tuple[KeypointRegressor, dict]:
    """Train a :class:`KeypointRegressor` on cached features; returns the kept model and a training log.

    ``tile`` repeats the training rows per epoch (the reference's limited-annotation sampler). The model of
    the epoch with the best validation score is returned (the last epoch without ``val``). ``input_scale``:
    fixed per-channel factors (``scale_from_std(feature_std(...))``) or ``None``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reg = KeypointRegressor(channels, train.landmarks.shape[1], n_heatmaps=n_heatmaps,
                                init_std=init_std, softargmax_mul=softargmax_mul,
                                input_scale=input_scale).to(device)
    opt = torch.optim.Adam(reg.parameters(), lr=lr, betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 8e-4)
    n = len(train)
    best, best_state, best_epoch, history = math.inf, None, 0, []
    for epoch in range(1, epochs + 1):
        with warnings.catch_warnings():  # the reference steps at the start of each epoch (η(1) first)
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        reg.train()
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(tile)]).numpy()
        total, steps = 0.0, 0
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            maps = train.batch(idx, device)
            gt = train.landmarks[idx].to(device)
            vis = train.visible[idx].to(device)
            total += regressor_step(reg, opt, maps, gt, vis, grid)
            steps += 1
        entry = {"epoch": epoch, "loss": total / max(1, steps), "lr": opt.param_groups[0]["lr"]}
        if val is not None:
            r = evaluate_predictions(predict(reg, val, device, grid=grid), val, image_size=image_size, alpha=alpha)
            entry["val"] = _score(r)
            if entry["val"] < best:
                best, best_epoch = entry["val"], epoch
                best_state = copy.deepcopy(reg.state_dict())
        history.append(entry)
        if log is not None:
            log(entry)
    if best_state is not None:
        reg.load_state_dict(best_state)
    else:
        best_epoch = epochs
    return reg, {"selected_epoch": best_epoch, "selection": "best val" if val is not None else "last epoch",
                 "history": history}


# ----------------------------------------------------------------------------- fine-tuning
def _live_batch(ds: LandmarkDataset, rows, stats: str, device, tps: bool = False,
                generator: torch.Generator | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Normalised final-view inputs, ``[-1, 1]`` landmarks and visibility of ``ds`` rows (TPS-warped if ``tps``)."""
    from equinv.augment.tps import random_tps

    b = ds.__getitems__([int(r) for r in rows])
    if tps:
        img, lm, vis = random_tps(b["image"].float().div(255.0), b["landmarks"], b["visible"], "paper", generator)
        b = {"image": img.clamp(0, 1), "landmarks": lm, "visible": vis}
    view = final_view(b, ds.pre)
    x = prepare_input(view["image"], None, stats, device)
    return x, C.points_to_norm(view["landmarks"].float(), ds.pre.size, align_corners=True), view["visible"]


def label_set(ds: LandmarkDataset, spec: str = "", batch: int = 256) -> FeatureSet:
    """A :class:`FeatureSet` with the ground truth of ``ds`` and no features (for fine-tuning)."""
    lms, viss = [], []
    for s in range(0, len(ds), batch):
        b = final_view(ds.__getitems__(list(range(s, min(s + batch, len(ds))))), ds.pre)
        lms.append(C.points_to_norm(b["landmarks"].float(), ds.pre.size, align_corners=True))
        viss.append(b["visible"])
    return FeatureSet([], torch.cat(lms), torch.cat(viss), getattr(ds, "eyes", None), spec, 0)


def predict_live(reg: KeypointRegressor, source, ds: LandmarkDataset, stats: str, device, batch: int = 64,
                 grid: int = 48) -> Tensor:
    """``(N, K, 2)`` normalised predictions through the (fine-tuned) ``source`` for every image of ``ds``."""
    reg.eval()
    source.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(ds), batch):
            x, _, _ = _live_batch(ds, range(s, min(s + batch, len(ds))), stats, device)
            out.append(reg(source.maps(x), grid).float().cpu())
    return torch.cat(out)


def finetune_regressor(source, ds: LandmarkDataset, rows, labels: FeatureSet, *, epochs: int, lr: float, wd: float,
                       lr_mult: float = 0.1, batch_size: int = 32, tile: int = 1, tps: bool = False, val=None,
                       stats: str = "face", device="cpu", seed: int = 0, grid: int = 48, image_size: int = 96,
                       alpha: float = 0.05, n_heatmaps: int = 50, init_std: float = 1.0,
                       softargmax_mul: float = 100.0, input_scale: Tensor | None = None,
                       log=None) -> tuple[KeypointRegressor, dict]:
    """Train the regressor and the source's weights end to end (appendix A.2); the source is modified in place.

    The backbone runs on every batch (train mode: BatchNorm statistics adapt) at ``lr · lr_mult``; with
    ``tps`` a fresh TPS warp is drawn per image per step, as the reference's limited-annotation loader does.
    ``val = (dataset, labels)`` selects the epoch (the source's weights of that epoch are restored too).
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reg = KeypointRegressor(source.channels, labels.landmarks.shape[1], n_heatmaps=n_heatmaps,
                                init_std=init_std, softargmax_mul=softargmax_mul,
                                input_scale=input_scale).to(device)
    params = [p for p in source.parameters() if p.is_floating_point()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": reg.parameters(), "lr": lr}, {"params": params, "lr": lr * lr_mult}],
                           betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 8e-4)
    rows = np.arange(len(ds)) if rows is None else np.asarray(rows)
    best, best_state, best_epoch, history, passed = math.inf, None, 0, [], 0
    try:
        for epoch in range(1, epochs + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                sched.step()
            reg.train()
            source.train()
            order = torch.cat([torch.randperm(len(rows), generator=g) for _ in range(tile)]).numpy()
            total, steps = 0.0, 0
            for s in range(0, len(order), batch_size):
                x, gt, vis = _live_batch(ds, rows[order[s : s + batch_size]], stats, device, tps, g)
                gt, vis = gt.to(device), vis.to(device)
                total += regressor_step(reg, opt, source.maps(x), gt, vis, grid)
                passed += x.shape[0]
                steps += 1
            entry = {"epoch": epoch, "loss": total / max(1, steps), "lr": opt.param_groups[0]["lr"]}
            if val is not None:
                vds, vlab = val
                pred = predict_live(reg, source, vds, stats, device, grid=grid)
                passed += len(vds)
                entry["val"] = _score(evaluate_predictions(pred, vlab, image_size=image_size, alpha=alpha))
                if entry["val"] < best:
                    best, best_epoch = entry["val"], epoch
                    best_state = (copy.deepcopy(reg.state_dict()), copy.deepcopy(source.state_dict()))
            history.append(entry)
            if log is not None:
                log(entry)
    finally:
        for p in params:
            p.requires_grad_(False)
        source.eval()
    if best_state is not None:
        reg.load_state_dict(best_state[0])
        source.load_state_dict(best_state[1])
    else:
        best_epoch = epochs
    return reg, {"selected_epoch": best_epoch, "selection": "best val" if val is not None else "last epoch",
                 "history": history, "backbone_images": passed}


# ----------------------------------------------------------------------------- driver
def _resolved_config(cfg: RegressionConfig, source) -> dict:
    """``cfg`` as a dict with what was actually used: a DVE backbone's source and arch."""
    c = asdict(cfg)
    if isinstance(source, DVESource):
        c["source"], c["arch"] = "dve", source.arch
    return c


def _load(spec: str, pre: Preprocess, log: SkipLog, progress: bool = False
          ) -> tuple[LandmarkDataset, str, tuple[int, int] | None]:
    parsed = parse_spec(spec)
    index = read_index(parsed, log)
    if not index.names:
        raise InputError(f"{spec} has no landmark annotations")
    ds = LandmarkDataset(index, pre)
    ds.prepare(log, progress=progress)
    if len(ds) == 0:
        raise InputError(f"no usable images in {spec}")
    return ds, parsed.kind, index.eyes


def _mean_std(values: list[float | None]) -> tuple[float | None, float | None]:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return None, None
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()), float(a.std(ddof=1)) if len(a) > 1 else 0.0


def run_regression(cfg: RegressionConfig, out: str | Path | None = None, *, trunk=None, log=None,
                   progress: bool = False) -> dict:
    """Train and evaluate the landmark regressor as configured; writes ``out/regression.json`` when ``out``.

    ``trunk``: an already built frozen trunk (for tests); default ``frozen_trunk(arch, backbone, seed)``.
    Returns the result dictionary (top-level ``iod_error_percent``, ``pck``, ``per_landmark``, ``std`` are
    those of the first ``n_train`` entry on the first test spec; ``runs`` has all of them).
    """
    if not cfg.test:
        raise InputError("give at least one test spec")
    if cfg.epochs < 1 or cfg.repeats < 1 or cfg.batch_size < 1:
        raise InputError("epochs, repeats and batch size must be positive")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = _weights(cfg.backbone)
    taps = parse_taps(cfg.taps)
    probe_grid = cfg.grid or 48
    source = build_source(cfg.source, backbone=weights, arch=cfg.arch, layers=cfg.layers, taps=taps,
                          projector=cfg.projector, parts=cfg.parts, grid=probe_grid, seed=cfg.seed, trunk=trunk,
                          device=device, readout=cfg.proj_readout)
    grid = cfg.grid or (native_side(source, cfg.image_size) if len(source.channels) == 1 else 48)
    pre = Preprocess(size=cfg.image_size)
    source_id = json.dumps([cfg.source, cfg.arch, "random" if weights is None else str(Path(weights).resolve()),
                            cfg.seed, [str(Path(x).resolve()) if x else None for x in (cfg.projector, cfg.parts)],
                            probe_grid, *([cfg.proj_readout] if cfg.source == "projected" else [])])
    logsk = SkipLog()

    loaded: dict[str, tuple[LandmarkDataset, str]] = {}

    def load(spec: str) -> tuple[LandmarkDataset, str]:
        if spec not in loaded:
            ds, kind, eyes = _load(spec, pre, logsk, progress)
            ds.eyes = eyes
            loaded[spec] = ds, source.stats or stats_for_kind(kind)
        return loaded[spec]

    def features(spec: str) -> tuple[FeatureSet, LandmarkDataset]:
        ds, stats = load(spec)
        if cfg.finetune:  # labels only: the features change with the trunk
            return label_set(ds, spec), ds
        key = _feature_key(spec, source_id, source.taps, ds.pre) if cfg.cache_dir else None
        fs = extract_features(ds, source, stats, device, batch=cfg.feature_batch, spec=spec, eyes=ds.eyes,
                              cache_dir=cfg.cache_dir, cache_key=key, progress=progress)
        return fs, ds

    train_fs, train_ds = features(cfg.train)
    val_fs, val_ds = features(cfg.val) if cfg.val else (None, None)
    test_sets = [features(t) for t in cfg.test]
    test_fs = [t[0] for t in test_sets]
    backbone_images = train_fs.backbone_images + (val_fs.backbone_images if val_fs else 0)
    backbone_images += sum(f.backbone_images for f in test_fs)
    initial_source = copy.deepcopy(source.state_dict()) if cfg.finetune else None
    source_kind = "dve" if isinstance(source, DVESource) else cfg.source
    scale_mode = resolve_input_scale(cfg.input_scale, source_kind)
    in_scale = None
    init_std = resolve_heatmap_init(cfg.heatmap_init_std)
    if scale_mode == "std" or init_std == FAN_IN:
        # from every training image's features (no labels), before any subset is drawn
        std = (live_feature_std(source, train_ds, None, load(cfg.train)[1], device) if cfg.finetune
               else feature_std(train_fs, source.channels))
        in_scale = scale_from_std(std) if scale_mode == "std" else None
        if init_std == FAN_IN:
            init_std = fan_in_init_std(std, in_scale)

    runs = []
    # repeat 0's test predictions of every n_train entry (normalised [-1, 1] in the final view), for reports
    saved: dict[str, np.ndarray] = {f"gt_{i}": f.landmarks.numpy() for i, f in enumerate(test_fs)}
    saved.update({f"visible_{i}": f.visible.numpy() for i, f in enumerate(test_fs)})
    for n_req in cfg.n_train:
        n_all = len(train_fs)
        if n_req is not None and not 1 <= n_req <= n_all:
            raise InputError(f"--n-train {n_req} is outside 1..{n_all} (training images)")
        lr_d, wd_d = default_hparams(n_req)
        lr = cfg.lr if cfg.lr is not None else lr_d
        wd = cfg.wd if cfg.wd is not None else wd_d
        repeats = cfg.repeats if n_req is not None else 1
        per_test: list[list[dict]] = [[] for _ in cfg.test]
        reps = []
        for r in range(repeats):
            seed = cfg.seed * 1000003 + (n_req or 0) * 101 + r
            rng = np.random.default_rng(seed)
            tile = 1
            if n_req is None:
                sub = train_fs
                rows = None
            else:
                rows = np.sort(rng.choice(n_all, size=n_req, replace=False))
                tile = max(1, min(cfg.tile_to, n_all) // n_req)
                if cfg.tps_aug and not cfg.finetune:
                    gen = torch.Generator().manual_seed(seed)
                    sub = extract_features(train_ds, source, load(cfg.train)[1], device,
                                           batch=cfg.feature_batch, spec=cfg.train, eyes=train_fs.eyes, rows=rows,
                                           tps_copies=cfg.tps_copies, generator=gen)
                    backbone_images += sub.backbone_images
                    # image-major copies: one epoch visits each (image, copy) once, ~tile times per image
                    tile = max(1, math.ceil(tile / cfg.tps_copies))
                elif not cfg.finetune:
                    t_rows = torch.from_numpy(rows)
                    sub = FeatureSet([m[rows] if isinstance(m, np.ndarray) else m[t_rows] for m in train_fs.maps],
                                     train_fs.landmarks[t_rows], train_fs.visible[t_rows], train_fs.eyes, cfg.train)
            if cfg.finetune:
                source.load_state_dict(initial_source)
                stats = load(cfg.train)[1]
                reg, info = finetune_regressor(
                    source, train_ds, rows, train_fs, epochs=cfg.epochs, lr=lr, wd=wd,
                    lr_mult=cfg.finetune_lr_mult, batch_size=cfg.batch_size, tile=tile, tps=cfg.tps_aug,
                    val=(val_ds, val_fs) if val_ds is not None else None, stats=stats, device=device, seed=seed,
                    grid=grid, image_size=cfg.image_size, alpha=cfg.pck_alpha, n_heatmaps=cfg.n_heatmaps,
                    init_std=init_std, softargmax_mul=cfg.softargmax_mul, input_scale=in_scale,
                    log=log)
                backbone_images += info["backbone_images"]
            else:
                reg, info = train_regressor(sub, source.channels, epochs=cfg.epochs, lr=lr, wd=wd,
                                            batch_size=cfg.batch_size, tile=tile, val=val_fs, device=device, seed=seed,
                                            grid=grid, image_size=cfg.image_size, alpha=cfg.pck_alpha,
                                            n_heatmaps=cfg.n_heatmaps, init_std=init_std,
                                            softargmax_mul=cfg.softargmax_mul, input_scale=in_scale, log=log)
            rep = {"repeat": r, "seed": seed, "selected_epoch": info["selected_epoch"], "tile": tile,
                   "final_loss": info["history"][-1]["loss"],
                   "train_rows": rows.tolist() if rows is not None else None, "tests": {}}
            # a reference with no features: the mean of the same training shapes, for every test image
            t_rows = slice(None) if rows is None else torch.from_numpy(rows)
            shape = mean_shape(train_fs.landmarks[t_rows], train_fs.visible[t_rows])
            for i, (spec, (fs, ds)) in enumerate(zip(cfg.test, test_sets, strict=True)):
                if cfg.finetune:
                    pred = predict_live(reg, source, ds, load(spec)[1], device, grid=grid)
                    backbone_images += len(ds)
                else:
                    pred = predict(reg, fs, device, grid=grid)
                res = evaluate_predictions(pred, fs, image_size=cfg.image_size, alpha=cfg.pck_alpha,
                                           paper=cfg.paper_pck, eval_batch_size=cfg.eval_batch_size)
                res["_pred"] = pred
                per_test[i].append(res)
                rep["tests"][spec] = {k: res.get(k) for k in ("iod_error_percent", "pck", "paper_pck")}
                ref = evaluate_predictions(shape.expand_as(fs.landmarks).clone(), fs, image_size=cfg.image_size,
                                           alpha=cfg.pck_alpha, eval_batch_size=cfg.eval_batch_size)
                for k in ("iod_error_percent", "pck"):
                    res[f"mean_shape_{k}"] = rep["tests"][spec][f"mean_shape_{k}"] = ref.get(k)
                if r == 0:
                    saved[f"pred_{len(runs)}_{i}"] = res.pop("_pred").numpy()
                res.pop("_pred", None)
            rep["selection"] = info["selection"]
            reps.append(rep)
        tests = {}
        for spec, results in zip(cfg.test, per_test, strict=True):
            summary: dict = {}
            for key in ("iod_error_percent", "pck", "paper_pck", "mean_shape_iod_error_percent", "mean_shape_pck"):
                m, s = _mean_std([res.get(key) for res in results])
                summary[key], summary[f"{key}_std"] = m, s
            for key in ("per_landmark", "pck_per_landmark", "paper_pck_per_landmark"):
                if results[0].get(key) is not None:
                    summary[key] = np.nanmean(np.asarray([res[key] for res in results], np.float64), 0).tolist()
            summary["std"] = summary["iod_error_percent_std"] if summary["iod_error_percent"] is not None \
                else summary["pck_std"]
            summary["n_images"] = results[0]["n_images"]
            tests[spec] = summary
        runs.append({"n_train": n_req if n_req is not None else n_all, "all_annotations": n_req is None,
                     "repeats": repeats, "lr": lr, "wd": wd, "tests": tests, "per_repeat": reps})

    first = runs[0]["tests"][cfg.test[0]]
    result = {
        "iod_error_percent": first["iod_error_percent"],
        "pck": first["pck"],
        "paper_pck": first.get("paper_pck"),
        "per_landmark": first.get("per_landmark"),
        "n_train": runs[0]["n_train"],
        "repeats": runs[0]["repeats"],
        "std": first["std"],
        "runs": runs,
        "config": _resolved_config(cfg, source),
        "datasets": {"train": cfg.train, "val": cfg.val, "test": list(cfg.test), "n_train_images": len(train_fs),
                     "n_val_images": len(val_fs) if val_fs else 0, "n_test_images": [len(f) for f in test_fs]},
        "landmark_names": list(train_ds.names),
        "eyes": list(train_fs.eyes) if train_fs.eyes else None,
        "source": cfg.source if not isinstance(source, DVESource) else "dve",
        "taps": list(source.taps),
        "channels": list(source.channels),
        "grid": grid,
        "input_scale": scale_mode,
        "heatmap_init_std": init_std,  # the std used (--heatmap-init-std fan-in: the value it resolved to)
        "seed": cfg.seed,
        "backbone_images": backbone_images,
        "device": str(device),
        "selection": "best validation metric" if cfg.val else "last epoch (no validation split)",
        "tps_aug_note": ("fixed TPS copies per selected image precomputed once (not redrawn per epoch)"
                         if cfg.tps_aug else None),
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in logsk.skips],
        "versions": software_versions(),
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "predictions.npz", **saved)
        result["predictions_file"] = "predictions.npz"
        (out / "regression.json").write_text(json.dumps(result, indent=2, default=str))
    return result

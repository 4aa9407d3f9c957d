"""Figure-ground segmentation on hypercolumns (paper appendix E, Table 11).

Pipeline of :func:`run_segmentation`:

1. Images and their foreground masks (:mod:`equinv.data.masks`) are preprocessed alike (same crop box,
   same resampling); the evaluated view is the centre ``image_size`` (96 px) square, the ground truth its
   mask coverage > 127.
2. Frozen (default): every image goes through the trunk **once**; the per-layer native maps are cached in
   fp16 (:func:`equinv.evaluate.regression.extract_features`, memmaps with ``cache_dir``).
   With ``finetune`` the trunk is trained too, at ``lr · trunk_lr_mult``, and its maps are recomputed on
   every batch (no cache). BatchNorm stays in eval mode (its affine weights train, its statistics stay):
   limited-annotation batches are tiled copies of 1–10 images, whose batch statistics are a poor estimate,
   and train-mode features would differ from the eval-mode ones the head's channel standardisation was
   measured on and the test is predicted with (a random trunk's running statistics are still 0 / 1).
3. The head is one 1×1 convolution to a single logit over the hypercolumn
   (:class:`~equinv.models.hypercolumn.FactorisedConv1x1`, so the ``C × 48 × 48`` hypercolumn is never
   built), zero-initialised, at the ``grid`` (48), reading channels standardised with the training
   subset's mean and std (:class:`SegmentationHead`; a fixed affine map, so still one 1×1 convolution of
   the raw hypercolumn, but better conditioned: with a random ResNet18 on synthetic faces, 128 training
   images, test / train IoU were 0.83 / 0.87 with it, 0.82 / 0.83 without). Loss: BCE-with-logits against
   the mask coverage area-averaged to the grid (soft targets). Adam(lr, wd), batch 32, CosineAnnealingLR(T_max = epochs)
   stepped after each epoch. Limited annotations: seeded subsets of ``n_train`` images per repeat, tiled to
   ``min(tile_to, |train|)`` rows per epoch as in the regression protocol.
4. Prediction: the grid logits upsampled bilinearly to the 96-px view, foreground where logit > 0.
   IoU = |pred ∧ gt| / |pred ∨ gt| per image (1 when both are empty), averaged over images; the epoch
   with the best mean validation IoU is kept (last epoch without ``val``); test sets are only evaluated.

Two reference points are written beside the numbers, per test set: ``all_foreground`` (every pixel
foreground) and ``mean_mask`` (the mean training mask thresholded at 1/2: a fixed, centred blob — what
the paper's Figure 9 shows a fine-tuned random network falling back to).
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.masks import load_masks, split_masks_option
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate.descriptors import prepare_input, stats_for_kind
from equinv.evaluate.regression import FeatureSet, _feature_key, _mean_std, _weights, extract_features
from equinv.models.hypercolumn import FactorisedConv1x1, Hypercolumn, frozen_trunk, reference_taps
from equinv.report.record import run_record


@dataclass
class SegmentationConfig:
    """Everything that defines a segmentation evaluation (written into ``segment.json``).

    ``masks``: a mask folder for every spec (a spec's own ``masks=DIR`` option wins; the synthetic kind
    needs none). ``n_train`` ``[None]`` means all annotations. ``layers``: the reference ``--layer``
    (hypercolumn taps, deepest first; 1 = conv5 only). ``finetune``: train the trunk too, at
    ``lr · trunk_lr_mult``.
    """

    train: str
    test: list[str]
    val: str | None = None
    masks: str | None = None
    backbone: str = "random"
    arch: str = "resnet18"
    layers: int = 4
    epochs: int = 30
    lr: float = 1e-3
    wd: float = 0.0
    batch_size: int = 32
    n_train: list[int | None] = field(default_factory=lambda: [None])
    repeats: int = 1
    tile_to: int = 1000
    finetune: bool = False
    trunk_lr_mult: float = 0.1
    seed: int = 0
    image_size: int = 96
    grid: int = 48
    device: str | None = None
    cache_dir: str | None = None
    feature_batch: int = 64


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

    def maps(self, idx, device, hc: Hypercolumn | None = None) -> list[Tensor]:
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
        t = torch.from_numpy(np.asarray(rows, dtype=np.int64))
        fs = None
        if self.features is not None:
            f = self.features
            fs = FeatureSet([m[np.asarray(rows)] if isinstance(m, np.ndarray) else m[t] for m in f.maps],
                            f.landmarks[t], f.visible[t], f.eyes, f.spec)
        return MaskedSet(self.spec, self.coverage[t], self.stats, fs,
                         None if self.images is None else self.images[t])


def _views(ds: LandmarkDataset, batch: int = 256) -> Tensor:
    """``(N, 3, S, S)`` uint8 final views of every item of ``ds``."""
    out = [final_view(ds.__getitems__(list(range(s, min(s + batch, len(ds))))), ds.pre)["image"]
           for s in range(0, len(ds), batch)]
    return torch.cat(out).contiguous()


def load_dataset(spec: str, pre: Preprocess, masks: str | None, log: SkipLog) -> tuple[LandmarkDataset, str, Tensor]:
    """Read ``spec`` (landmarks optional) and its masks: ``(dataset, kind, (N, S, S) uint8 coverage)``."""
    clean, own = split_masks_option(spec)
    parsed = parse_spec(clean)
    ds = LandmarkDataset(read_index(parsed, log), pre)
    ds.prepare(log, progress=False)
    if len(ds) == 0:
        raise InputError(f"no usable images in {spec}")
    cov = torch.from_numpy(load_masks(ds, own or masks))
    return ds, parsed.kind, cov


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
def channel_stats(data: MaskedSet, device, hc: Hypercolumn | None = None, batch: int = 64
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
                  batch: int = 64, hc: Hypercolumn | None = None) -> Tensor:
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
               size: int = 96, hc: Hypercolumn | None = None, trunk_lr_mult: float = 0.1,
               log=None) -> tuple[SegmentationHead, dict]:
    """Train the logit head (and, given ``hc``, the trunk under it, modified in place); returns the kept head.

    Fine-tuning keeps ``hc`` in eval mode (BatchNorm statistics fixed, see the module docstring). The
    epoch with the best mean validation IoU is kept (the trunk's weights of that epoch too); the last
    epoch without ``val``. ``info["backbone_images"]`` counts images that went through the trunk here.
    """
    g = torch.Generator().manual_seed(seed)
    train = train.on_device(device)
    if val is not None and hc is None:
        val = val.on_device(device)
    means, stds = channel_stats(train, device, hc)
    passed = len(train) if hc is not None else 0
    head = SegmentationHead(channels, means, stds).to(device)
    groups = [{"params": list(head.parameters()), "lr": lr}]
    trunk_params = []
    if hc is not None:
        trunk_params = [p for p in hc.parameters() if p.is_floating_point()]
        for p in trunk_params:
            p.requires_grad_(True)
        groups.append({"params": trunk_params, "lr": lr * trunk_lr_mult})
    opt = torch.optim.Adam(groups, lr=lr, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 1e-3)
    n = len(train)
    best, best_state, best_epoch, history = -math.inf, None, 0, []
    try:
        for epoch in range(1, epochs + 1):
            head.train()
            order = torch.cat([torch.randperm(n, generator=g) for _ in range(tile)]).numpy()
            total, steps = 0.0, 0
            for s in range(0, len(order), batch_size):
                idx = order[s : s + batch_size]
                logit = head(train.maps(idx, device, hc), grid)
                loss = F.binary_cross_entropy_with_logits(logit.float(), train.targets(idx, grid, device))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                passed += len(idx) if hc is not None else 0
                total += loss.item()
                steps += 1
            entry = {"epoch": epoch, "loss": total / max(1, steps), "lr": opt.param_groups[0]["lr"]}
            sched.step()
            if val is not None:
                entry["val_iou"] = float(iou(predict_masks(head, val, device, grid=grid, size=size, hc=hc),
                                             val.gt).mean())
                passed += len(val) if hc is not None else 0
                if entry["val_iou"] > best:
                    best, best_epoch = entry["val_iou"], epoch
                    best_state = (copy.deepcopy(head.state_dict()),
                                  copy.deepcopy(hc.state_dict()) if hc is not None else None)
            history.append(entry)
            if log is not None:
                log(entry)
    finally:
        for p in trunk_params:
            p.requires_grad_(False)
        if hc is not None:
            hc.eval()
    if best_state is not None:
        head.load_state_dict(best_state[0])
        if hc is not None:
            hc.load_state_dict(best_state[1])
    else:
        best_epoch = epochs
    return head, {"selected_epoch": best_epoch, "selection": "best val IoU" if val is not None else "last epoch",
                  "history": history, "backbone_images": passed}


def baselines(train_gt: Tensor, test_gt: Tensor) -> dict:
    """IoU of two data-blind predictions: every pixel foreground, and the mean training mask > ½."""
    full = torch.ones_like(test_gt)
    prior = (train_gt.float().mean(0) > 0.5).expand_as(test_gt)
    return {"all_foreground": float(iou(full, test_gt).mean()), "mean_mask": float(iou(prior, test_gt).mean())}


# ----------------------------------------------------------------------------- driver
def _weight_change(hc: Hypercolumn, initial: dict) -> float:
    """Relative L2 change of the trunk's parameters (not BatchNorm statistics) since the ``initial`` state."""
    num = den = 0.0
    for k, v in hc.named_parameters():
        num += float((v.detach().float() - initial[k].float()).pow(2).sum())
        den += float(initial[k].float().pow(2).sum())
    return math.sqrt(num / max(den, 1e-30))


def run_segmentation(cfg: SegmentationConfig, out: str | Path | None = None, *, trunk=None, log=None) -> dict:
    """Train and evaluate the figure-ground head as configured; writes ``out/segment.json`` when ``out``.

    ``trunk``: an already built frozen trunk (tests); default ``frozen_trunk(arch, backbone, seed)``. It is
    never modified: fine-tuning trains a copy per repeat. The top-level ``iou`` / ``std`` are those of the
    first ``n_train`` entry on the first test spec; ``runs`` has all of them.
    """
    if not cfg.test:
        raise InputError("give at least one test spec")
    if cfg.epochs < 1 or cfg.repeats < 1 or cfg.batch_size < 1:
        raise InputError("epochs, repeats and batch size must be positive")
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    weights = _weights(cfg.backbone)
    if trunk is None:
        trunk = frozen_trunk(cfg.arch, weights, seed=cfg.seed)
    taps = reference_taps(cfg.layers)
    base_trunk = trunk
    if cfg.finetune:  # the caller's trunk stays as it was
        base_trunk = copy.deepcopy(trunk)
    hc = Hypercolumn(base_trunk, taps, size=cfg.grid).to(device).eval()
    pre = Preprocess(size=cfg.image_size)
    trunk_id = json.dumps([cfg.arch, "random" if weights is None else str(Path(weights).resolve()), cfg.seed])
    logsk = SkipLog()
    backbone_images = 0

    def load(spec: str) -> MaskedSet:
        nonlocal backbone_images
        ds, kind, cov = load_dataset(spec, pre, cfg.masks, logsk)
        stats = stats_for_kind(kind)
        if cfg.finetune:  # the trunk changes: keep the images, not their features
            return MaskedSet(spec, cov, stats, images=_views(ds))
        key = _feature_key(split_masks_option(spec)[0], trunk_id, taps, ds.pre) if cfg.cache_dir else None
        fs = extract_features(ds, hc, stats, device, batch=cfg.feature_batch, spec=spec,
                              cache_dir=cfg.cache_dir, cache_key=key)
        backbone_images += fs.backbone_images
        return MaskedSet(spec, cov, stats, features=fs)

    train_set = load(cfg.train)
    val_set = load(cfg.val) if cfg.val else None
    test_sets = [load(t) for t in cfg.test]
    initial = copy.deepcopy(hc.state_dict()) if cfg.finetune else None

    runs = []
    saved: dict[str, np.ndarray] = {f"mask_gt_{j}": t.gt.numpy().astype(np.uint8) for j, t in enumerate(test_sets)}
    n_all = len(train_set)
    for n_req in cfg.n_train:
        if n_req is not None and not 1 <= n_req <= n_all:
            raise InputError(f"--n-train {n_req} is outside 1..{n_all} (training images)")
        repeats = cfg.repeats if n_req is not None else 1
        per_test: list[list[dict]] = [[] for _ in cfg.test]
        reps = []
        for r in range(repeats):
            seed = cfg.seed * 1000003 + (n_req or 0) * 101 + r
            rng = np.random.default_rng(seed)
            rows, sub, tile = None, train_set, 1
            if n_req is not None:
                rows = np.sort(rng.choice(n_all, size=n_req, replace=False))
                sub = train_set.subset(rows)
                tile = max(1, min(cfg.tile_to, n_all) // n_req)
            live = None
            if cfg.finetune:
                hc.load_state_dict(initial)
                live = hc
            head, info = train_head(sub, hc.channels, epochs=cfg.epochs, lr=cfg.lr, wd=cfg.wd,
                                    batch_size=cfg.batch_size, tile=tile, val=val_set, device=device, seed=seed,
                                    grid=cfg.grid, size=cfg.image_size, hc=live, trunk_lr_mult=cfg.trunk_lr_mult,
                                    log=log)
            backbone_images += info["backbone_images"]
            rep = {"repeat": r, "seed": seed, "selected_epoch": info["selected_epoch"], "tile": tile,
                   "final_loss": info["history"][-1]["loss"],
                   "train_rows": rows.tolist() if rows is not None else None, "tests": {}}
            if cfg.finetune:
                rep["trunk_weight_change"] = _weight_change(hc, initial)
            for j, (spec, ts) in enumerate(zip(cfg.test, test_sets, strict=True)):
                pred = predict_masks(head, ts, device, grid=cfg.grid, size=cfg.image_size, hc=live)
                backbone_images += len(ts) if live is not None else 0
                scores = iou(pred, ts.gt)
                per_test[j].append({"iou": float(scores.mean()), "n_images": len(ts)})
                rep["tests"][spec] = {"iou": float(scores.mean())}
                if r == 0:
                    saved[f"mask_pred_{len(runs)}_{j}"] = pred.numpy().astype(np.uint8)
            reps.append(rep)
        tests = {}
        for spec, results in zip(cfg.test, per_test, strict=True):
            m, s = _mean_std([res["iou"] for res in results])
            tests[spec] = {"iou": m, "iou_std": s, "n_images": results[0]["n_images"]}
        runs.append({"n_train": n_req if n_req is not None else n_all, "all_annotations": n_req is None,
                     "repeats": repeats, "tests": tests, "per_repeat": reps})

    first = runs[0]["tests"][cfg.test[0]]
    result = {
        "iou": first["iou"],
        "std": first["iou_std"],
        "n_train": runs[0]["n_train"],
        "repeats": runs[0]["repeats"],
        "runs": runs,
        "baselines": {spec: baselines(train_set.gt, ts.gt) for spec, ts in zip(cfg.test, test_sets, strict=True)},
        **run_record(asdict(cfg), [cfg.train] + ([cfg.val] if cfg.val else []) + list(cfg.test), cfg.seed),
        "n_images": {"train": n_all, "val": len(val_set) if val_set else 0, "test": [len(t) for t in test_sets]},
        "taps": list(taps),
        "channels": list(hc.channels),
        "mode": "finetune" if cfg.finetune else "frozen",
        "backbone_images": backbone_images,
        "device": str(device),
        "selection": "best validation IoU" if cfg.val else "last epoch (no validation split)",
        "skipped": [{"path": str(s.path), "reason": s.reason} for s in logsk.skips],
    }
    if out is not None:
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / "segment_predictions.npz", **saved)
        result["predictions_file"] = "segment_predictions.npz"
        (out / "segment.json").write_text(json.dumps(result, indent=2, default=str))
    return result

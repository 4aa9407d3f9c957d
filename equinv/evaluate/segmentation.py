"""Figure-ground segmentation on hypercolumns (paper appendix E, Table 11).

Pipeline of :func:`run_segmentation`:

1. Images and their foreground masks (:mod:`equinv.data.masks`) are preprocessed alike (same crop box,
   same resampling); the evaluated view is the centre ``image_size`` (96 px) square, the ground truth its
   mask coverage > 127.
2. Frozen (default): every image goes through the trunk **once**; the per-layer native maps are cached in
   fp16 (:func:`equinv.evaluate.protocol.cached_features`, memmaps with ``cache_dir``). Any feature source
   works (:class:`~equinv.features.spec.FeatureSpec`; the paper uses the hypercolumn).
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
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.masks import load_masks, split_masks_option
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate.protocol import Draw, cached_features, check_counts, first_views, pick_device, run_protocol
from equinv.evaluate.segmentation_head import MaskedSet, baselines, iou, predict_masks, train_head
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.features.stats import stats_for_kind
from equinv.records import N_SHOW, mean_std, run_record, write_json, write_npz


@dataclass
class SegmentationConfig:
    """Everything that defines a segmentation evaluation (written into ``segment.json``).

    ``masks``: a mask folder for every spec (a spec's own ``masks=DIR`` option wins; the synthetic kind
    needs none). ``features``: the feature source (its ``grid``, default 48, is the logit grid).
    ``n_train`` ``[None]`` means all annotations. ``finetune``: train the source too, at
    ``lr · trunk_lr_mult``.
    """

    train: str
    test: list[str]
    val: str | None = None
    masks: str | None = None
    features: FeatureSpec = field(default_factory=FeatureSpec)
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
    device: str | None = None
    cache_dir: str | None = None
    feature_batch: int = 64

    def as_dict(self) -> dict:
        """The config as JSON-ready data (the feature source as its own dict)."""
        return asdict(self) | {"features": self.features.as_dict()}


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



def _weight_change(source: nn.Module, initial: dict) -> float:
    """Relative L2 change of the source's parameters (not BatchNorm statistics) since the ``initial`` state."""
    num = den = 0.0
    for k, v in source.named_parameters():
        num += float((v.detach().float() - initial[k].float()).pow(2).sum())
        den += float(initial[k].float().pow(2).sum())
    return math.sqrt(num / max(den, 1e-30))


class SegmentationTask:
    """Figure-ground segmentation as a task of :func:`~equinv.evaluate.protocol.run_protocol`."""

    def __init__(self, cfg: SegmentationConfig, *, trunk=None, log=None):
        check_counts(cfg.epochs, cfg.repeats, cfg.batch_size, cfg.test)
        self.cfg, self.log, self.tests = cfg, log, list(cfg.test)
        self.device = pick_device(cfg.device)
        if cfg.finetune and trunk is not None:  # the caller's trunk stays as it was
            trunk = copy.deepcopy(trunk)
        self.source = build_source(cfg.features.with_defaults(grid=48), self.device, trunk=trunk)
        self.spec, self.grid = self.source.spec, self.source.spec.grid
        self.pre = Preprocess(size=cfg.image_size)
        self.skips, self.backbone_images, self.saved, self.test_views = SkipLog(), 0, {}, []

    def load(self, spec: str, keep_views: int = 0) -> MaskedSet:
        """Masks plus cached features (frozen) or final views (fine-tuning) of ``spec``; its first
        ``keep_views`` final views are kept for the report."""
        ds, kind, cov = load_dataset(spec, self.pre, self.cfg.masks, self.skips)
        if keep_views:
            self.saved[f"images_{len(self.test_views)}"] = first_views(ds, keep_views)
            self.test_views.append(spec)
        stats = self.spec.stats or self.source.stats or stats_for_kind(kind)
        if self.cfg.finetune:  # the trunk changes: keep the images, not their features
            return MaskedSet(spec, cov, stats, images=_views(ds))
        fs = cached_features(ds, split_masks_option(spec)[0], self.source, stats, self.device,
                             cache_dir=self.cfg.cache_dir, batch=self.cfg.feature_batch)
        self.backbone_images += fs.backbone_images
        return MaskedSet(spec, cov, stats, features=fs)

    def prepare(self) -> None:
        """Load every set (and keep the first test images for the report)."""
        cfg = self.cfg
        self.train_set = self.load(cfg.train)
        self.val_set = self.load(cfg.val) if cfg.val else None
        self.test_sets = [self.load(t, keep_views=N_SHOW) for t in self.tests]
        self.initial = copy.deepcopy(self.source.state_dict()) if cfg.finetune else None
        for j, t in enumerate(self.test_sets):
            self.saved[f"mask_gt_{j}"] = t.gt.numpy().astype(np.uint8)

    def run_fields(self, n_req: int | None) -> dict:
        """No extra fields: the head's lr and wd are fixed."""
        return {}

    def fit(self, draw: Draw, run_index: int) -> tuple[dict, list[dict]]:
        """Train one head on ``draw`` and measure its IoU on every test set."""
        cfg = self.cfg
        sub = self.train_set if draw.rows is None else self.train_set.subset(draw.rows)
        live = None
        if cfg.finetune:
            self.source.load_state_dict(self.initial)
            live = self.source
        head, info = train_head(sub, self.source.channels, epochs=cfg.epochs, lr=cfg.lr, wd=cfg.wd,
                                batch_size=cfg.batch_size, tile=draw.tile, val=self.val_set, device=self.device,
                                seed=draw.seed, grid=self.grid, size=cfg.image_size, hc=live,
                                trunk_lr_mult=cfg.trunk_lr_mult, log=self.log)
        self.backbone_images += info["backbone_images"]
        rep = draw.entry(info)
        if cfg.finetune:
            rep["trunk_weight_change"] = _weight_change(self.source, self.initial)
        results = []
        for j, (spec, ts) in enumerate(zip(self.tests, self.test_sets, strict=True)):
            pred = predict_masks(head, ts, self.device, grid=self.grid, size=cfg.image_size, hc=live)
            self.backbone_images += len(ts) if live is not None else 0
            scores = iou(pred, ts.gt)
            results.append({"iou": float(scores.mean()), "n_images": len(ts)})
            rep["tests"][spec] = {"iou": float(scores.mean())}
            if draw.repeat == 0:
                self.saved[f"mask_pred_{run_index}_{j}"] = pred.numpy().astype(np.uint8)
        return rep, results

    def summarise(self, results: list[dict]) -> dict:
        """Mean IoU ± std over repeats and the image count of one test set."""
        m, s = mean_std([res["iou"] for res in results])
        return {"iou": m, "iou_std": s, "n_images": results[0]["n_images"]}

    def record(self, runs: list[dict]) -> dict:
        """The run record: the first entry's IoU, every run, the data-blind baselines, config and versions."""
        cfg, first = self.cfg, runs[0]["tests"][self.tests[0]]
        specs = [cfg.train] + ([cfg.val] if cfg.val else []) + list(cfg.test)
        return {
            "iou": first["iou"], "std": first["iou_std"], "n_train": runs[0]["n_train"],
            "repeats": runs[0]["repeats"], "runs": runs,
            "baselines": {spec: baselines(self.train_set.gt, ts.gt) for spec, ts in zip(self.tests, self.test_sets,
                                                                                         strict=True)},
            **run_record(cfg.as_dict() | {"features": self.spec.as_dict()}, specs, cfg.seed),
            "n_images": {"train": len(self.train_set), "val": len(self.val_set) if self.val_set else 0,
                         "test": [len(t) for t in self.test_sets]},
            "features": self.spec.as_dict(), "taps": list(self.source.taps), "channels": list(self.source.channels),
            "mode": "finetune" if cfg.finetune else "frozen", "backbone_images": self.backbone_images,
            "device": str(self.device),
            "selection": "best validation IoU" if cfg.val else "last epoch (no validation split)",
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skips.skips],
        }


def run_segmentation(cfg: SegmentationConfig, out: str | Path | None = None, *, trunk=None, log=None) -> dict:
    """Train and evaluate the figure-ground head as configured; writes ``out/segment.json`` when ``out``.

    ``trunk``: an already built frozen trunk (tests); default: the one ``cfg.features`` describes. It is
    never modified: fine-tuning trains a copy. The top-level ``iou`` / ``std`` are those of the first
    ``n_train`` entry on the first test spec; ``runs`` has all of them.
    """
    task = SegmentationTask(cfg, trunk=trunk, log=log)
    task.prepare()
    runs = run_protocol(task, cfg.n_train, len(task.train_set), cfg.repeats, cfg.seed, cfg.tile_to)
    result = task.record(runs)
    if out is not None:
        write_npz(Path(out) / "segment_predictions.npz", task.saved)
        result["predictions_file"] = "segment_predictions.npz"
        write_json(Path(out) / "segment.json", result)
    return result

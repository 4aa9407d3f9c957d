"""Landmark regression on frozen features (protocol §4), a task of the evaluation protocol.

:func:`run_regression`: every image of the train / val / test specs goes through the frozen source **once**
(:func:`~equinv.evaluate.protocol.cached_features`); for each requested number of annotations and repeat
(:mod:`equinv.evaluate.protocol`) a :class:`~equinv.models.regressor.KeypointRegressor` is trained on the
cached maps (:func:`~equinv.evaluate.regressor_fit.train_regressor`), the epoch with the best validation metric
kept, and evaluated on every test set, beside a reference with no features: the mean of the same training
shapes predicted for every test image. The test specs are only evaluated, never used for selection.

Limited annotations: lr 1e-2 / wd 5e-2 by default when N ≤ 100, else 1e-3 / 5e-4. With ``tps_aug`` each selected
image also gets ``tps_copies`` fixed TPS-warped copies (the reference ``WarperSingle`` "paper" preset, on the
136-px canvas before the centre crop, landmarks moved with the warp). The reference draws a fresh warp every
epoch; this would mean running the backbone every epoch, so a fixed set of copies is precomputed instead (the
copies are cycled through the tiled epoch). ``finetune`` trains the source too (appendix A.2): no cache, the
source runs on every batch.
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate import regressor_fit as fit
from equinv.evaluate.metrics import evaluate_predictions
from equinv.evaluate.protocol import Draw, cached_features, check_counts, first_views, pick_device, run_protocol
from equinv.features.cache import FeatureSet, extract_features, label_set
from equinv.features.sources import build_source, native_side
from equinv.features.spec import FeatureSpec
from equinv.features.stats import stats_for_kind
from equinv.records import N_SHOW, mean_std, software_versions, write_json, write_npz


@dataclass
class RegressionConfig:
    """Everything that defines a regression evaluation (written into the result JSON).

    ``features``: the feature source (:class:`~equinv.features.spec.FeatureSpec`; its ``grid`` is the heat-map
    grid, ``None``: 48, or the map's native side for a one-map source such as a single layer or DVE, as the
    reference does, §9; its ``readout`` defaults to ``linear`` here). ``lr`` / ``wd`` ``None`` pick the protocol
    defaults. ``n_train`` ``[None]`` means all annotations. ``finetune``: train the backbone too (appendix A.2),
    at ``lr · finetune_lr_mult``. ``input_scale``: ``none`` (the reference: features as they come), ``std``
    (each input channel divided by its standard deviation over the training features, a fixed factor computed
    once, no labels used) or ``auto`` (``std`` for the ``projected`` and ``nmf`` sources, whose channels are far
    from O(1); ``none`` for the hypercolumn and DVE), see :func:`~equinv.evaluate.regressor_fit.resolve_input_scale`.
    ``anchor``: start each regressor from the mean shape of its training subset (``equinv fit``'s default; the
    reference starts from a random linear map).
    """

    train: str
    test: list[str]
    val: str | None = None
    features: FeatureSpec = field(default_factory=FeatureSpec)
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
    anchor: bool = False

    def as_dict(self) -> dict:
        """The config as JSON-ready data (the feature source as its own dict)."""
        d = asdict(self)
        d["features"] = self.features.as_dict()
        return d


def load_labelled(spec: str, pre: Preprocess, log: SkipLog, progress: bool = False
                  ) -> tuple[LandmarkDataset, str]:
    """A prepared dataset with landmarks (``ds.eyes`` set) and its kind; one-line errors when it has none."""
    parsed = parse_spec(spec)
    index = read_index(parsed, log)
    if not index.names:
        raise InputError(f"{spec} has no landmark annotations")
    ds = LandmarkDataset(index, pre)
    ds.prepare(log, progress=progress)
    if len(ds) == 0:
        raise InputError(f"no usable images in {spec}")
    ds.eyes = index.eyes
    return ds, parsed.kind


def same_landmarks(train: LandmarkDataset, train_spec: str, other: LandmarkDataset, flag: str, spec: str) -> None:
    """Refuse a ``flag`` set whose landmark list is not the training set's (a regressor predicts the latter)."""
    a, b = tuple(train.names), tuple(other.names)
    if a != b:
        def few(names):
            return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "")

        raise InputError(f"{flag} {spec} has {len(b)} landmarks ({few(b)}), the training set {train_spec} "
                         f"{len(a)} ({few(a)}): use sets of the same landmarks")


class RegressionTask:
    """Landmark regression as a task of :func:`~equinv.evaluate.protocol.run_protocol`."""

    def __init__(self, cfg: RegressionConfig, *, trunk=None, log=None, progress: bool = False):
        check_counts(cfg.epochs, cfg.repeats, cfg.batch_size, cfg.test)
        self.cfg, self.log, self.progress = cfg, log, progress
        self.tests = list(cfg.test)
        self.device = pick_device(cfg.device)
        spec = cfg.features.with_defaults(readout="linear")
        self.source = build_source(spec.with_defaults(grid=48), self.device, trunk=trunk)
        self.spec = self.source.spec
        one_map = len(self.source.channels) == 1
        self.grid = spec.grid or (native_side(self.source, cfg.image_size) if one_map else 48)
        self.pre = Preprocess(size=cfg.image_size)
        self.skips = SkipLog()
        self.backbone_images = 0
        self.loaded: dict[str, tuple[LandmarkDataset, str, FeatureSet]] = {}
        self.saved: dict[str, np.ndarray] = {}

    # -- data ------------------------------------------------------------------------------------------------
    def datasets(self) -> None:
        """Read every set's annotations and images; refuse sets whose landmarks are not the training set's.

        Before any feature is computed: a regressor predicts the training set's landmarks, so a test set of
        another landmark list (68 points against 5) could only fail after the training.
        """
        cfg = self.cfg
        specs = [cfg.train, *([cfg.val] if cfg.val else []), *self.tests]
        self.labelled = {s: load_labelled(s, self.pre, self.skips, self.progress) for s in dict.fromkeys(specs)}
        for flag, spec in [("--val", cfg.val)] * bool(cfg.val) + [("--test", t) for t in self.tests]:
            same_landmarks(self.labelled[cfg.train][0], cfg.train, self.labelled[spec][0], flag, spec)

    def load(self, spec: str) -> tuple[LandmarkDataset, str, FeatureSet]:
        """Dataset, input statistics and features (labels only when fine-tuning) of ``spec``, once."""
        if spec not in self.loaded:
            ds, kind = self.labelled[spec]
            stats = self.spec.stats or self.source.stats or stats_for_kind(kind)
            if self.cfg.finetune:  # labels only: the features change with the trunk
                fs = label_set(ds, spec)
            else:
                fs = cached_features(ds, spec, self.source, stats, self.device, cache_dir=self.cfg.cache_dir,
                                     batch=self.cfg.feature_batch, eyes=ds.eyes, progress=self.progress)
                self.backbone_images += fs.backbone_images
            self.loaded[spec] = ds, stats, fs
        return self.loaded[spec]

    def prepare(self) -> None:
        """Load every set; fix the input scaling and heat-map init from the training features (no labels)."""
        cfg = self.cfg
        self.datasets()
        self.train_ds, self.train_stats, self.train_fs = self.load(cfg.train)
        self.val = self.load(cfg.val) if cfg.val else None
        self.test_sets = [self.load(t) for t in self.tests]
        self.initial = copy.deepcopy(self.source.state_dict()) if cfg.finetune else None

        def std():  # from every training image's features (no labels), before any subset is drawn
            if cfg.finetune:
                return fit.live_feature_std(self.source, self.train_ds, None, self.train_stats, self.device)
            return fit.feature_std(self.train_fs, self.source.channels)

        self.scale_mode, self.in_scale, self.init_std = fit.input_scaling(cfg.input_scale, cfg.heatmap_init_std,
                                                                          self.spec.source, std)
        for i, (ds, _, fs) in enumerate(self.test_sets):
            self.saved.update({f"gt_{i}": fs.landmarks.numpy(), f"visible_{i}": fs.visible.numpy(),
                               f"images_{i}": first_views(ds, N_SHOW)})

    # -- one draw --------------------------------------------------------------------------------------------
    def hparams(self, n_req: int | None) -> tuple[float, float]:
        """The learning rate and weight decay of an ``n_req``-annotation subset."""
        lr_d, wd_d = fit.default_hparams(n_req)
        return (self.cfg.lr if self.cfg.lr is not None else lr_d, self.cfg.wd if self.cfg.wd is not None else wd_d)

    def run_fields(self, n_req: int | None) -> dict:
        """``lr`` and ``wd`` of a ``runs`` entry."""
        lr, wd = self.hparams(n_req)
        return {"lr": lr, "wd": wd}

    def _subset(self, draw: Draw) -> tuple[FeatureSet, int]:
        """The training features of ``draw`` (TPS copies precomputed with ``tps_aug``) and its epoch tiling."""
        cfg = self.cfg
        if draw.rows is None:
            return self.train_fs, draw.tile
        if not cfg.tps_aug:
            return self.train_fs.subset(draw.rows), draw.tile
        gen = torch.Generator().manual_seed(draw.seed)
        sub = extract_features(self.train_ds, self.source, self.train_stats, self.device, batch=cfg.feature_batch,
                               spec=cfg.train, eyes=self.train_fs.eyes, rows=draw.rows, tps_copies=cfg.tps_copies,
                               generator=gen)
        self.backbone_images += sub.backbone_images
        # image-major copies: one epoch visits each (image, copy) once, ~tile times per image
        return sub, max(1, math.ceil(draw.tile / cfg.tps_copies))

    def _train(self, draw: Draw, lr: float, wd: float, shape: torch.Tensor):
        """The regressor of ``draw`` (fine-tuning: the source too, from its initial weights)."""
        cfg = self.cfg
        head = dict(epochs=cfg.epochs, lr=lr, wd=wd, batch_size=cfg.batch_size, device=self.device, seed=draw.seed,
                    grid=self.grid, image_size=cfg.image_size, alpha=cfg.pck_alpha, n_heatmaps=cfg.n_heatmaps,
                    init_std=self.init_std, softargmax_mul=cfg.softargmax_mul, input_scale=self.in_scale,
                    anchor=shape if cfg.anchor else None, log=self.log)
        if cfg.finetune:
            self.source.load_state_dict(self.initial)
            val = (self.val[0], self.val[2]) if self.val is not None else None
            reg, info = fit.finetune_regressor(self.source, self.train_ds, draw.rows, self.train_fs, tile=draw.tile,
                                               lr_mult=cfg.finetune_lr_mult, tps=cfg.tps_aug, val=val,
                                               stats=self.train_stats, **head)
            self.backbone_images += info["backbone_images"]
            return reg, info
        sub, tile = self._subset(draw)
        reg, info = fit.train_regressor(sub, self.source.channels, tile=tile, **head,
                                        val=self.val[2] if self.val is not None else None)
        return reg, info | {"tile": tile}

    def _predict(self, reg, ds: LandmarkDataset, stats: str, fs: FeatureSet) -> torch.Tensor:
        if self.cfg.finetune:
            self.backbone_images += len(ds)
            return fit.predict_live(reg, self.source, ds, stats, self.device, grid=self.grid)
        return fit.predict(reg, fs, self.device, grid=self.grid)

    def fit(self, draw: Draw, run_index: int) -> tuple[dict, list[dict]]:
        """Train one regressor on ``draw``; evaluate it and the mean training shape on every test set."""
        cfg = self.cfg
        rows = slice(None) if draw.rows is None else torch.from_numpy(draw.rows)
        shape = fit.mean_shape(self.train_fs.landmarks[rows], self.train_fs.visible[rows])
        reg, info = self._train(draw, *self.hparams(draw.n_req), shape)
        rep = draw.entry(info)
        results = []
        for i, (spec, (ds, stats, fs)) in enumerate(zip(self.tests, self.test_sets, strict=True)):
            pred = self._predict(reg, ds, stats, fs)
            res = evaluate_predictions(pred, fs, image_size=cfg.image_size, alpha=cfg.pck_alpha, paper=cfg.paper_pck,
                                       eval_batch_size=cfg.eval_batch_size)
            rep["tests"][spec] = {k: res.get(k) for k in ("iod_error_percent", "pck", "paper_pck")}
            ref = evaluate_predictions(shape.expand_as(fs.landmarks).clone(), fs, image_size=cfg.image_size,
                                       alpha=cfg.pck_alpha, eval_batch_size=cfg.eval_batch_size)
            for k in ("iod_error_percent", "pck"):
                res[f"mean_shape_{k}"] = rep["tests"][spec][f"mean_shape_{k}"] = ref.get(k)
            if draw.repeat == 0:
                self.saved[f"pred_{run_index}_{i}"] = pred.numpy()
            results.append(res)
        rep["selection"] = info["selection"]
        return rep, results

    def summarise(self, results: list[dict]) -> dict:
        """One test set's metrics: mean ± std over repeats, per-landmark means, image count."""
        summary: dict = {}
        for key in ("iod_error_percent", "pck", "paper_pck", "mean_shape_iod_error_percent", "mean_shape_pck"):
            summary[key], summary[f"{key}_std"] = mean_std([res.get(key) for res in results])
        for key in ("per_landmark", "pck_per_landmark", "paper_pck_per_landmark"):
            if results[0].get(key) is not None:
                summary[key] = np.nanmean(np.asarray([res[key] for res in results], np.float64), 0).tolist()
        summary["std"] = summary["iod_error_percent_std"] if summary["iod_error_percent"] is not None \
            else summary["pck_std"]
        summary["n_images"] = results[0]["n_images"]
        return summary

    # -- the record ------------------------------------------------------------------------------------------
    def record(self, runs: list[dict]) -> dict:
        """The run record: the first entry's headline numbers, every run, config, data, source and versions."""
        cfg, first = self.cfg, runs[0]["tests"][self.tests[0]]
        config = cfg.as_dict() | {"features": self.spec.as_dict()}
        if self.spec.source == "dve":
            config["dve_arch"] = self.source.arch
        return {
            "iod_error_percent": first["iod_error_percent"], "pck": first["pck"], "paper_pck": first.get("paper_pck"),
            "per_landmark": first.get("per_landmark"), "n_train": runs[0]["n_train"],
            "repeats": runs[0]["repeats"], "std": first["std"], "runs": runs, "config": config,
            "datasets": {"train": cfg.train, "val": cfg.val, "test": list(cfg.test),
                         "n_train_images": len(self.train_fs), "n_val_images": len(self.val[2]) if self.val else 0,
                         "n_test_images": [len(t[2]) for t in self.test_sets]},
            "landmark_names": list(self.train_ds.names),
            "eyes": list(self.train_fs.eyes) if self.train_fs.eyes else None,
            "source": self.spec.source, "features": self.spec.as_dict(), "taps": list(self.source.taps),
            "channels": list(self.source.channels), "grid": self.grid, "input_scale": self.scale_mode,
            "heatmap_init_std": self.init_std,  # the std used (fan-in: the value it resolved to)
            "seed": cfg.seed, "backbone_images": self.backbone_images, "device": str(self.device),
            "selection": "best validation metric" if cfg.val else "last epoch (no validation split)",
            "tps_aug_note": ("fixed TPS copies per selected image precomputed once (not redrawn per epoch)"
                             if cfg.tps_aug else None),
            "skipped": [{"path": str(s.path), "reason": s.reason} for s in self.skips.skips],
            "versions": software_versions(),
        }


def run_regression(cfg: RegressionConfig, out: str | Path | None = None, *, trunk=None, log=None,
                   progress: bool = False) -> dict:
    """Train and evaluate the landmark regressor as configured; writes ``out/regression.json`` when ``out``.

    ``trunk``: an already built frozen trunk (for tests); default: the one ``cfg.features`` describes.
    Returns the result dictionary (top-level ``iod_error_percent``, ``pck``, ``per_landmark``, ``std`` are
    those of the first ``n_train`` entry on the first test spec; ``runs`` has all of them).
    """
    task = RegressionTask(cfg, trunk=trunk, log=log, progress=progress)
    task.prepare()
    runs = run_protocol(task, cfg.n_train, len(task.train_fs), cfg.repeats, cfg.seed, cfg.tile_to)
    result = task.record(runs)
    if out is not None:
        write_npz(Path(out) / "predictions.npz", task.saved)
        result["predictions_file"] = "predictions.npz"
        write_json(Path(out) / "regression.json", result)
    return result

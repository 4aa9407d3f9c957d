"""``equinv fit``: train a landmark model on a labelled dataset spec and save it (:mod:`equinv.landmarks.model`).

The regressor is trained by the evaluation's own code (:func:`~equinv.evaluate.regressor_fit.train_regressor`
on features cached once, :func:`~equinv.evaluate.protocol.cached_features`), so ``eval regress`` and ``fit``
share one training path; ``fit`` only differs by its defaults, chosen for short runs on a CPU and few labels
(:data:`FIT_DEFAULTS`, docs/landmarks.md "Choosing fit's defaults"), and by keeping the model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from equinv.data.preprocess import Preprocess
from equinv.errors import InputError, SkipLog
from equinv.evaluate import regressor_fit as rf
from equinv.evaluate.metrics import evaluate_predictions
from equinv.evaluate.protocol import cached_features, pick_device
from equinv.evaluate.regression import load_labelled, same_landmarks
from equinv.features.sources import build_source, native_side, source_config
from equinv.features.spec import FeatureSpec
from equinv.features.stats import stats_for_kind
from equinv.landmarks.model import FORMAT, FORMAT_VERSION, LandmarkModel
from equinv.landmarks.transfer import fit_transfer
from equinv.records import software_versions

#: The heat-map grid of fit's regressor (``eval regress`` keeps the protocol's 48): docs/landmarks.md
#: "Choosing fit's defaults".
FIT_GRID = 32

#: Heads ``fit`` can train: the heat-map regressor, landmark transfer (:mod:`equinv.landmarks.transfer`), or
#: ``auto``: both, the better on --val (without --val: transfer up to :data:`AUTO_TRANSFER_MAX` labelled images).
HEADS = ("auto", "regressor", "transfer")
AUTO_TRANSFER_MAX = 64
#: The grid transfer matches on (that of the protocol's matching is 96; 48 is as good at N = 10 and 4× cheaper).
TRANSFER_GRID = 48

#: Rows an epoch visits at least (small training sets are tiled up to it, as the reference's sampler does).
EPOCH_ROWS = 1000


@dataclass
class FitConfig:
    """What ``equinv fit`` does (see its ``--help``). Defaults are fit's short-run settings, not the reference's."""

    train: str
    val: str | None = None
    features: FeatureSpec = field(default_factory=FeatureSpec)
    steps: int = 600
    lr: float = 3e-2
    wd: float = 5e-4
    batch_size: int = 32
    n_heatmaps: int = 16
    softargmax_mul: float = 3.0
    heatmap_init_std: float | str = "fan-in"
    input_scale: str = "auto"
    anchor: bool = True
    tps_copies: int = 0
    seed: int = 0
    image_size: int = 96
    limit: int | None = None
    device: str | None = None
    cache_dir: str | None = None
    head: str = "auto"

    def as_dict(self) -> dict:
        """JSON-ready settings (the feature source as its own dict)."""
        return asdict(self) | {"features": self.features.as_dict()}


def _framing(ds, fs) -> dict:
    """The training data's framing, stated for users: crop rule, context and landmark extent in the view."""
    pre = ds.pre
    crops = sorted({r.crop for r in ds.index.records})
    lm, vis = fs.landmarks.float(), fs.visible[..., None]
    hi = torch.where(vis, lm, -math.inf).amax(1)
    lo = torch.where(vis, lm, math.inf).amin(1)
    extent = ((hi - lo).amax(-1) / 2.0)[fs.visible.sum(1) >= 2]  # normalised span / 2 = share of the view side
    return {"kind": ds.index.kind, "crop": crops[0] if len(crops) == 1 else ",".join(crops),
            "context": pre.canvas / pre.size, "box_scale": pre.box_scale, "landmark_scale": pre.landmark_scale,
            "landmark_extent": float(extent.median()) if len(extent) else None}


def _steps_plan(n: int, steps: int, batch: int) -> tuple[int, int]:
    """``(tile, epochs)``: epochs of at least :data:`EPOCH_ROWS` rows that add up to about ``steps`` steps."""
    tile = max(1, math.ceil(EPOCH_ROWS / n))
    per_epoch = math.ceil(n * tile / batch)
    return tile, max(1, math.ceil(steps / per_epoch))


def _metrics(head, fs, shape, device, grid: int) -> dict:
    res = evaluate_predictions(rf.predict(head, fs, device, grid=grid), fs)
    ref = evaluate_predictions(shape.expand_as(fs.landmarks).clone(), fs)
    return {"iod_error_percent": res["iod_error_percent"], "pck": res["pck"], "n_images": res["n_images"],
            "mean_shape_iod_error_percent": ref["iod_error_percent"], "mean_shape_pck": ref["pck"]}


def _score(metrics: dict) -> float:
    """What the validation choice between heads minimises: IOD error when known, else 100 − PCK."""
    iod = metrics["iod_error_percent"]
    return float(iod) if iod is not None else 100.0 - float(metrics["pck"])


@dataclass
class _Data:
    """What both heads are fitted from: the source, its features, the labels and their framing."""

    source: torch.nn.Module
    grid: int
    ds: object
    fs: object  # the training rows (with their TPS copies when asked)
    plain: object  # the training rows as labelled
    vfs: object | None
    stats: str
    train: str
    shape: torch.Tensor
    skips: SkipLog


def _load(cfg: FitConfig, device, trunk, progress: bool) -> _Data:
    source = build_source(cfg.features.with_defaults(grid=FIT_GRID, readout="linear"), device, trunk=trunk)
    spec = source.spec
    grid = cfg.features.grid or (native_side(source, cfg.image_size) if len(source.channels) == 1 else FIT_GRID)
    pre, skips = Preprocess(size=cfg.image_size), SkipLog()
    train = cfg.train if cfg.limit is None else f"{cfg.train}{'&' if '?' in cfg.train else '?'}limit={cfg.limit}"
    ds, kind = load_labelled(train, pre, skips, progress)
    if cfg.val:  # checked before any feature is computed
        vds, vkind = load_labelled(cfg.val, pre, skips, progress)
        same_landmarks(ds, train, vds, "--val", cfg.val)
    stats = spec.stats or source.stats or stats_for_kind(kind)
    fs = cached_features(ds, train, source, stats, device, cache_dir=cfg.cache_dir, eyes=ds.eyes, progress=progress)
    plain = fs
    if cfg.tps_copies > 0:
        fs = cached_features(ds, train, source, stats, device, cache_dir=cfg.cache_dir, eyes=ds.eyes,
                             progress=progress, tps_copies=cfg.tps_copies, seed=cfg.seed)
    vfs = None
    if cfg.val:
        vfs = cached_features(vds, cfg.val, source, spec.stats or source.stats or stats_for_kind(vkind), device,
                              cache_dir=cfg.cache_dir, eyes=vds.eyes, progress=progress)
    shape = rf.mean_shape(plain.landmarks, plain.visible)  # of the labels as given, not of their warped copies
    return _Data(source, grid, ds, fs, plain, vfs, stats, train, shape, skips)


def _regressor(cfg: FitConfig, d: _Data, device, log) -> tuple[torch.nn.Module, dict]:
    scale_mode, in_scale, init_std = rf.input_scaling(cfg.input_scale, cfg.heatmap_init_std, d.source.spec.source,
                                                      lambda: rf.feature_std(d.fs, d.source.channels))
    tile, epochs = _steps_plan(len(d.fs), cfg.steps, cfg.batch_size)
    reg, info = rf.train_regressor(d.fs, d.source.channels, epochs=epochs, lr=cfg.lr, wd=cfg.wd,
                                   batch_size=cfg.batch_size, tile=tile, val=d.vfs, device=device, seed=cfg.seed,
                                   grid=d.grid, image_size=cfg.image_size, n_heatmaps=cfg.n_heatmaps,
                                   init_std=init_std, softargmax_mul=cfg.softargmax_mul, input_scale=in_scale,
                                   anchor=d.shape if cfg.anchor else None, log=log)
    desc = {"kind": "regressor", "channels": list(d.source.channels), "n_landmarks": len(d.ds.names),
            "n_heatmaps": cfg.n_heatmaps, "softargmax_mul": cfg.softargmax_mul, "grid": d.grid,
            "input_scale": in_scale is not None, "bias": cfg.anchor, "heatmap_init_std": init_std,
            "input_scale_mode": scale_mode}
    training = {"epochs": epochs, "tile": tile, "steps": epochs * math.ceil(len(d.fs) * tile / cfg.batch_size),
                "selected_epoch": info["selected_epoch"], "selection": info["selection"],
                "final_loss": info["history"][-1]["loss"]}
    return reg.eval(), {"head": desc, "training": training, "history": info["history"]}


def _transfer(d: _Data, device) -> tuple[torch.nn.Module, dict]:
    head, info = fit_transfer(d.plain, d.source.channels, TRANSFER_GRID, device)
    desc = {"kind": "transfer", "channels": list(d.source.channels), "n_landmarks": len(d.ds.names),
            "n_examples": len(d.plain), "grid": TRANSFER_GRID, "window": head.window,
            "temperature": head.temperature, "shape_only": bool(head.shape_only)}
    training = {"epochs": 0, "steps": 0, "selection": info["selection"], "transfer": info}
    return head.eval(), {"head": desc, "training": training}


def _heads(cfg: FitConfig, d: _Data, device, log) -> tuple[torch.nn.Module, dict, dict]:
    """The head ``cfg.head`` asks for (``auto``: both, the better on --val; without --val transfer up to
    :data:`AUTO_TRANSFER_MAX` labelled images) with its description and its validation metrics."""
    kinds = [cfg.head] if cfg.head != "auto" else (
        ["regressor", "transfer"] if d.vfs is not None else
        ["transfer" if len(d.plain) <= AUTO_TRANSFER_MAX else "regressor"])
    fitted = [(_regressor(cfg, d, device, log) if k == "regressor" else _transfer(d, device)) for k in kinds]
    if d.vfs is None:
        return (*fitted[0], None)
    scored = [(h, info, _metrics(h, d.vfs, d.shape, device, info["head"]["grid"])) for h, info in fitted]
    best = min(scored, key=lambda t: _score(t[2]))
    if len(scored) > 1:
        best[1]["training"]["head_choice"] = {s[1]["head"]["kind"]: s[2] for s in scored}
    return best


def fit_model(cfg: FitConfig, *, trunk=None, log=None, progress: bool = False) -> tuple[LandmarkModel, dict]:
    """Train a landmark model as configured; returns it and its training info (not saved: see :func:`fit`)."""
    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError("--steps and --batch-size must be positive")
    if cfg.head not in HEADS:
        raise InputError(f"--head must be one of {', '.join(HEADS)}, got {cfg.head!r}")
    device = pick_device(cfg.device)
    d = _load(cfg, device, trunk, progress)
    head, info, val = _heads(cfg, d, device, log)
    meta = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "features": d.source.spec.as_dict(),
        "source_config": source_config(d.source),
        "regressor": info["head"],
        "input": {"image_size": cfg.image_size, "stats": d.stats},
        "framing": _framing(d.ds, d.plain),
        "landmarks": {"names": list(d.ds.names), "flip_perm": list(d.ds.flip_perm),
                      "eyes": list(d.ds.eyes) if d.ds.eyes else None},
        "training": {"spec": d.train, "rows": len(d.plain), "tps_copies": cfg.tps_copies, "val": cfg.val,
                     **info["training"], "settings": cfg.as_dict(), "skipped": [str(s) for s in d.skips.skips]},
        "validation": val,
        "versions": software_versions(),
    }
    return LandmarkModel(d.source, head, meta), {**info["training"], **{k: info[k] for k in ("history",) if k in info}}


def fit(cfg: FitConfig, out: str | Path, *, force: bool = False, log=None, progress: bool = False) -> LandmarkModel:
    """Train and save a landmark model into the directory ``out`` (refused if it holds one, unless ``force``)."""
    from equinv.landmarks.model import META

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError("--out must be a directory, not a file", out)
    if (out / META).exists() and not force:
        raise InputError("already holds a landmark model (use --force to replace it)", out)
    model, _ = fit_model(cfg, log=log, progress=progress)
    model.save(out)
    return model


def summary(model: LandmarkModel) -> str:
    """One line about a fitted model: head, rows, epochs and validation numbers against the mean shape."""
    t, v, h = model.meta["training"], model.meta["validation"], model.meta["regressor"]
    if h.get("kind") == "transfer":
        how = "mean shape (no transfer setting beat it held out)" if h["shape_only"] else \
            f"landmark transfer, window {h['window']:g} spread, T {h['temperature']:g}"
        line = f"{t['rows']} training faces, {how}"
    else:
        line = f"{t['rows']} training faces, heat-map regressor, {t['epochs']} epochs ({t['steps']} steps)"
    if v:
        if v["iod_error_percent"] is not None:
            line += (f"; val IOD {v['iod_error_percent']:.2f}% (mean shape {v['mean_shape_iod_error_percent']:.2f}%)")
        line += f"; val PCK {v['pck']:.1f}% (mean shape {v['mean_shape_pck']:.1f}%)"
    return line


"""Projector training on a frozen hypercolumn (protocol.md §3; CL2 ``train_feature_projector.py``).

Layout of a run directory::

    RUN/config.json                      the full ProjectConfig
    RUN/checkpoints/last.safetensors     projector + optimizer + epoch + best so far (written each epoch)
    RUN/checkpoints/best.safetensors     projector of the epoch with the lowest different-identity error
    RUN/tb/                              TensorBoard: loss, lr, matching errors
    RUN/log.jsonl                        one JSON line per logged step and one per epoch (``"val": {...}``)

``mode="reference"`` (the code): softmax projector, one image per sample through the MoCo face chain
(``augment``; ``--no-augment`` for the paper's wording), hypercolumn at ``train_size``² (24), the
reference loss (power 0.5, T = 8 for d = 64 else 7) at stride ``size/train_size``.
``mode="paper"``: linear projector, pairs ``(x, TPS(x))`` (preset ``tps``, on the canvas before the
slice) and Eq. 3 with ‖g(u) − v‖ (power 1), T = 7; no augmentation by default.
``mode="dve"`` (equinv's option, neither the paper's nor the reference's): DVE's training pairs
(:func:`equinv.train.dve.make_pairs`: two TPS views with DVE's photometric noise) and DVE's loss with an
auxiliary image (the next image of the batch; :func:`equinv.losses.dve.dve_loss`, descriptors
L2-normalised × T, T = 20, power 0.5) on the projected hypercolumn. The two modes above only ask that
locations of one face be told apart; matching through another face is what asks descriptors to agree
*across* faces, which is what matching across identities measures. Linear projector by default: with the
spatial softmax this loss matched twice as badly (docs/representations.md); ``projector`` chooses in
every mode.

Adam(lr 1e-3, betas (0.5, 0.999), wd 5e-4); per-epoch cosine ``lr_e = η_min + (lr − η_min)·½(1 + cos(π e/E))``
for 1-based epoch e (CosineAnnealingLR stepped at the start of each epoch, as the reference), η_min = lr·0.2³·0.1.
After every epoch, matching on ``val_pairs`` pairs of a seeded subset of ``val`` (never a test split).
Resume (``resume=True``) continues after the last finished epoch; data order and augmentation draws come
from ``(seed, epoch)`` and ``(seed, step)``, so a resumed run replays the same batches.

Without augmentation the (un-warped) input of an image never changes, so its hypercolumn maps are cached
(fp16, on the training device) up to ``feature_cache_gb``.

``trunk_lr > 0`` (equinv's option; the paper and the reference keep the trunk frozen): the ResNet trunk is
trained with the projector under the same loss, at its own Adam learning rate on the same cosine schedule,
batch-norm statistics frozen (:class:`~equinv.models.projector.TunedProjector`). The checkpoints then carry the
trunk, the projected feature source reads it (:func:`equinv.features.sources.build_source`), and the run also
writes ``RUN/backbone.safetensors`` (the best epoch's trunk) so that ``--backbone RUN`` gives its hypercolumn.
``init``: start from a trained projector (and its trunk, when it carries one), e.g. fine-tune the trunk after
a frozen-trunk run; the two runs' settings must agree on the projector (kind, dimension) and the trunk.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from equinv import precision as precision_lib
from equinv.augment.photometric import FACE_MEAN, FACE_STD, normalize
from equinv.augment.recipes import face_moco, make_view
from equinv.augment.tps import PRESETS as TPS_PRESETS
from equinv.augment.tps import sample_tps, warp_images
from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.sample import LandmarkIndex
from equinv.data.spec import parse_spec, read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate.matching import match_errors
from equinv.features.descriptors import descriptor_fn
from equinv.features.sources import ProjectedSource, hypercolumn_of
from equinv.features.spec import FeatureSpec
from equinv.losses.dve import dve_loss
from equinv.losses.equivariance import paper_equivariance_loss, reference_equivariance_loss, warp_targets
from equinv.models.backbones import load_backbone, save_backbone
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk
from equinv.models.projector import Projector, TunedProjector, load_projector, load_tuned_trunk, read_projector
from equinv.train.config import JsonConfig
from equinv.train.dve import make_pairs
from equinv.train.engine import Engine, Method, Position, step_seed, train
from equinv.train.guards import check_options, check_precision

__all__ = ["ProjectConfig", "FeatureCache", "ProjectMethod", "build_model", "load_projector", "train_projector"]

DEFAULT_DATA = "celeba:../shared/data/celeba?split=not_mafl"
DEFAULT_VAL = "celeba:../shared/data/celeba?split=mafl_train"
#: The reference's cosine floor as a fraction of the base lr (``η_min = lr · 0.2³ · 0.1``).
ETA_MIN_FRACTION = 0.2**3 * 0.1


@dataclass
class ProjectConfig(JsonConfig):
    """Everything that defines a projector run (saved as ``RUN/config.json``)."""

    run_kind = "projector run"
    resumable = ("epochs", "device", "precision", "channels_last", "match_batch", "log_every")

    backbone: str = "random"  # pretraining run dir, weights file, or "random" (seeded random init)
    arch: str = "resnet18"
    layer: int = 4
    data: str = DEFAULT_DATA
    val: str = DEFAULT_VAL
    val_pairs: int = 500
    val_seed: int = 1
    out: str = "runs/project"
    mode: str = "reference"  # reference | paper | dve
    projector: str | None = None  # softmax | linear; None: softmax in reference mode, linear otherwise
    dim: int = 64
    softargmax_mul: float | None = None  # None: 6.5 for d=64 else 7 (reference mode)
    temperature: float | None = None  # None: 8 for reference d=64, 20 for dve, else 7
    power: float | None = None  # None: 0.5 (reference, dve), 1.0 (paper)
    augment: bool | None = None  # None: True for reference and dve (its own noise), False for paper
    tps: str = "dve"  # paper mode: warp preset for x' = TPS(x)
    train_size: int = 24
    size: int = 96
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    weight_decay: float = 5e-4
    epochs: int = 10
    batch_size: int = 32
    max_images: int | None = None
    seed: int = 0
    trunk_lr: float = 0.0  # > 0: train the trunk too, at this Adam lr (equinv's option; 0 = frozen, the paper's)
    init: str | None = None  # a trained projector run / checkpoint to start from (with its trunk if it has one)
    precision: str = precision_lib.DEFAULT  # fp32 | bf16: the frozen trunk's pass (projector and loss in fp32)
    channels_last: bool = False  # NHWC activations in the trunk (implied by bf16)
    device: str | None = None
    match_batch: int = 16
    feature_cache_gb: float = 4.0
    log_every: int = 10
    skip_bad: bool = False

    # resolved defaults -------------------------------------------------------------------------
    @property
    def use_augment(self) -> bool:
        return (self.mode in ("reference", "dve")) if self.augment is None else bool(self.augment)

    @property
    def loss_temperature(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        if self.mode == "dve":
            return 20.0
        return 8.0 if (self.mode == "reference" and self.dim == 64) else 7.0

    @property
    def loss_power(self) -> float:
        if self.power is not None:
            return float(self.power)
        return 1.0 if self.mode == "paper" else 0.5

    @property
    def projector_mode(self) -> str:
        if self.projector is not None:
            return self.projector
        return "softmax" if self.mode == "reference" else "linear"

    @property
    def eta_min(self) -> float:
        return self.lr * ETA_MIN_FRACTION

    @property
    def tunes_trunk(self) -> bool:
        return self.trunk_lr > 0

    def lr_factor(self, epoch: int) -> float:
        """The cosine schedule's multiplier of a base lr at 1-based ``epoch`` (CosineAnnealingLR stepped before
        the epoch, ``η_min`` = base · 0.2³ · 0.1)."""
        cos = 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))
        return ETA_MIN_FRACTION + (1.0 - ETA_MIN_FRACTION) * cos

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch``: ``η_min + (lr − η_min)·½(1 + cos(π e/E))``."""
        return self.lr * self.lr_factor(epoch)

    def validate(self) -> None:
        """Refuse a run that cannot train (unknown mode, a test split, nonsensical numbers) before any work."""
        check_options(self, count=("layer", "val_pairs", "dim", "train_size", "size", "epochs", "batch_size",
                                   "max_images", "match_batch", "log_every"),
                      positive=("softargmax_mul", "temperature", "power"),
                      nonneg=("lr", "weight_decay", "feature_cache_gb", "trunk_lr"), beta=("beta1", "beta2"))
        check_precision(self.precision)
        if self.mode not in ("reference", "paper", "dve"):
            raise InputError(f"--mode must be reference, paper or dve, got {self.mode!r}")
        if self.projector not in (None, "softmax", "linear"):
            raise InputError(f"--projector must be softmax or linear, got {self.projector!r}")
        if self.mode == "dve" and self.augment is False:
            raise InputError("--mode dve draws DVE's photometric noise into every pair; --no-augment does not apply")
        if _looks_like_test(self.val):
            raise InputError(f"--val {self.val!r} looks like a test split; model selection must not see test data")
        if self.tps not in TPS_PRESETS:
            raise InputError(f"--tps must be one of {', '.join(TPS_PRESETS)}, got {self.tps!r}")
        if self.size % self.train_size:
            raise InputError(f"--train-size {self.train_size} must divide --size {self.size}")
        if self.init is not None:
            if not Path(self.init).exists():
                raise InputError("--init: no such projector run or checkpoint", self.init)
            if Path(self.init).resolve() == Path(self.out).resolve():
                raise InputError("--init names the run's own --out; continue a run with --resume instead", self.init)


def _looks_like_test(spec: str) -> bool:
    """A spec whose options (``split=mafl_test``, ``list=testImageList.txt``) or last path part name a test set.

    The folders above the data are not looked at: ``/tmp/pytest-1/faces`` is no test split.
    """
    parsed = parse_spec(spec)
    words = [parsed.path.name, *(f"{k}={v}" for k, v in parsed.options)]
    return any("test" in w.lower() for w in words)


class FeatureCache:
    """Hypercolumn maps per image (fp16), filled on first use; disabled when over the memory budget."""

    def __init__(self, n: int, budget_gb: float):
        self.n, self.budget = n, budget_gb * 2**30
        self.maps: list[torch.Tensor] | None = None
        self.filled: torch.Tensor | None = None
        self.enabled = budget_gb > 0

    def get(self, idx: torch.Tensor, compute) -> list[torch.Tensor]:
        """Maps of images ``idx`` (positions in the training set); ``compute()`` gives them when missing."""
        if not self.enabled:
            return compute()
        if self.maps is not None:
            have = self.filled[idx.to(self.filled.device)]
            if bool(have.all()):
                return [m[idx.to(m.device)].float() for m in self.maps]
        maps = compute()
        if self.maps is None:
            need = sum(m[0].numel() for m in maps) * 2 * self.n
            if need > self.budget:
                print(f"feature cache off: {need / 2**30:.1f} GB > --feature-cache-gb {self.budget / 2**30:.1f}")
                self.enabled = False
                return maps
            dev = maps[0].device
            self.maps = [torch.zeros((self.n, *m.shape[1:]), dtype=torch.float16, device=dev) for m in maps]
            self.filled = torch.zeros(self.n, dtype=torch.bool, device=dev)
        for store, m in zip(self.maps, maps, strict=True):
            store[idx.to(store.device)] = m.to(torch.float16)
        self.filled[idx.to(self.filled.device)] = True
        return maps


def _load_set(spec: str | LandmarkIndex, pre: Preprocess, log: SkipLog, progress: bool) -> LandmarkDataset:
    ds = LandmarkDataset(spec if isinstance(spec, LandmarkIndex) else read_index(spec, log), pre)
    ds.prepare(log, progress=progress)
    return ds


def _val_indices(n: int, pairs: int, seed: int) -> list[int]:
    """A seeded random subset of ``2·pairs`` images of a dataset of ``n`` (in random order)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: 2 * pairs].tolist()


def build_model(cfg: ProjectConfig, device: torch.device) -> tuple[Hypercolumn, Projector]:
    """The frozen hypercolumn of the configured backbone (the shared feature description) and a fresh projector."""
    check_precision(cfg.precision, device)
    # ``random`` is the one random network every --backbone random reader builds (FeatureSpec's seed), whatever
    # --seed (the projector's init, image subset and batches) says: otherwise --seed 1 trains a projector on a
    # network that matching and regression never read
    spec = FeatureSpec(backbone=cfg.backbone or "random", arch=cfg.arch, layers=cfg.layer,
                       precision=cfg.precision, channels_last=cfg.channels_last)
    hc = hypercolumn_of(spec, grid=cfg.size).to(device).eval()
    precision_lib.warn_if_emulated(cfg.precision, device)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        proj = Projector(hc.channels, cfg.dim, cfg.projector_mode, cfg.softargmax_mul)
    return hc, proj.to(device)


class ProjectMethod(Method):
    """Projector steps for the engine: a frozen hypercolumn, the projector and its loss; resumable per epoch.

    After every epoch the projector is validated by matching; ``best.safetensors`` keeps the epoch with
    the lowest different-identity error.
    """

    name = "project"
    log_epoch_end = False

    def __init__(self, cfg: ProjectConfig, device: torch.device, progress: bool):
        self.cfg, self.device, self.progress = cfg, device, progress
        log = SkipLog(skip_bad=cfg.skip_bad)
        pre = Preprocess(size=cfg.size)
        val_index = read_index(cfg.val, log)  # before the training images are decoded: validation needs labels
        if not val_index.names:
            raise InputError(f"--val {cfg.val} has no landmark annotations; validation by matching needs labelled "
                             "images (e.g. celeba:...?split=mafl_train)")
        train_ds = _load_set(cfg.data, pre, log, progress)
        self.images = ImageSet([train_ds], max_images=cfg.max_images, seed=cfg.seed)
        self.val_ds = _load_set(val_index, pre, log, progress)
        self.val_idx = _val_indices(len(self.val_ds), cfg.val_pairs, cfg.val_seed)
        if len(self.images) < 1 or len(self.val_idx) < 2:
            raise InputError("need at least one training image and two validation images")
        self.canvas, self.margin = train_ds.pre.canvas, train_ds.pre.margin
        self.view_cfg = face_moco(canvas=self.canvas, final=self.canvas if cfg.mode == "paper" else cfg.size)
        self.hc, self.proj = build_model(cfg, device)
        if cfg.init:
            _start_from(cfg, self.hc, self.proj)
        groups = [{"params": list(self.proj.parameters()), "base_lr": cfg.lr}]
        self.model: torch.nn.Module = self.proj
        if cfg.tunes_trunk:
            trunk = self.hc.extractor
            for q in trunk.parameters():
                q.requires_grad_(True)
            self.model = TunedProjector(self.proj, trunk)
            groups.append({"params": list(trunk.parameters()), "base_lr": cfg.trunk_lr})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                                          weight_decay=cfg.weight_decay)
        # a trunk in training gives new maps every step: nothing to cache
        cached = not cfg.use_augment and not cfg.tunes_trunk
        self.cache = FeatureCache(len(self.images), cfg.feature_cache_gb if cached else 0.0)
        self.trunk_grad = torch.enable_grad if cfg.tunes_trunk else torch.no_grad
        self.steps_per_epoch = math.ceil(len(self.images) / cfg.batch_size)
        self.stride = cfg.size / cfg.train_size
        self.sl = slice(self.margin, self.margin + cfg.size)
        self.best: dict | None = None
        self.history: list[dict] = []

    def set_epoch(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = g["base_lr"] * self.cfg.lr_factor(epoch)
        self.model.train()
        self.t0, self.losses = time.perf_counter(), []

    def batches(self, epoch: int, start: int):
        bs = self.cfg.batch_size
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.cfg.seed * 1000 + epoch))
        for s in range(start, self.steps_per_epoch):
            yield order[s * bs : (s + 1) * bs]

    def _base_view(self, img_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Normalised view: augmented through the MoCo chain, or plain (paper: whole canvas kept)."""
        if self.cfg.use_augment:
            return make_view(img_u8, None, None, self.view_cfg, gen).images
        x = normalize(img_u8.float().div_(255.0), FACE_MEAN, FACE_STD)
        return x if self.cfg.mode == "paper" else x[..., self.sl, self.sl]

    def step(self, pos: torch.Tensor, global_step: int) -> tuple[torch.Tensor, dict]:
        cfg, hc, proj, sl = self.cfg, self.hc, self.proj, self.sl
        temperature, power = cfg.loss_temperature, cfg.loss_power
        batch = self.images.__getitems__(pos.tolist())
        gen = torch.Generator().manual_seed(step_seed(cfg.seed, 0, global_step))
        img = batch["image"].to(self.device, non_blocking=True)
        x = None if cfg.mode == "dve" else self._base_view(img, gen)
        if cfg.mode == "dve":
            x1, x2, grid = make_pairs(img, cfg.size, cfg.size, gen)
            with self.trunk_grad():
                maps = hc.maps(torch.cat((x1, x2)))
            f1, f2 = proj([m.float() for m in maps], cfg.train_size).chunk(2)
            loss = dve_loss(f1, f2, grid, True, power, scale=temperature)
        elif cfg.mode == "reference":
            with self.trunk_grad():
                maps = self.cache.get(pos, lambda x=x: hc.maps(x))
            loss = reference_equivariance_loss(proj(maps, cfg.train_size), self.stride, temperature, power)
        else:
            params = sample_tps(x.shape[0], cfg.tps, gen).to(self.device)
            warped = warp_images(x, params)
            with self.trunk_grad():
                maps_x = self.cache.get(pos, lambda x=x: hc.maps(x[..., sl, sl].contiguous()))
                maps_w = hc.maps(warped[..., sl, sl].contiguous())
            f1 = proj(maps_w, cfg.train_size)
            f2 = proj(maps_x, cfg.train_size)
            tgt, valid = warp_targets(params, cfg.train_size, cfg.train_size, self.stride, self.canvas, self.margin,
                                      self.device)
            loss = paper_equivariance_loss(f1, f2, tgt, self.stride, valid, temperature, power)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.losses.append(loss.item())  # the epoch's mean loss; also what the guard checks
        return loss.detach(), {}

    def end_epoch(self, epoch: int, engine: Engine) -> None:
        """Validate by matching, log the epoch, keep ``best.safetensors`` when it improved."""
        cfg, lr = self.cfg, self.optimizer.param_groups[0]["lr"]
        train_s = time.perf_counter() - self.t0
        self.model.eval()
        descriptors = descriptor_fn(ProjectedSource(self.hc, self.proj, cfg.size, "output"), cfg.size)
        res = match_errors(descriptors, self.val_ds, n_pairs=cfg.val_pairs, seed=cfg.val_seed,
                           batch=cfg.match_batch, indices=self.val_idx, device=self.device, progress=self.progress)
        row = {"epoch": epoch, "loss": float(np.mean(self.losses)), "lr": lr, "train_s": train_s, "val": res}
        self.history.append({"epoch": epoch, "loss": row["loss"], **{k: res[k] for k in
                                                                      ("match_error_same", "match_error_diff")}})
        for k in ("match_error_same", "match_error_diff", "match_error_same_px", "match_error_diff_px"):
            engine.log.scalar(f"val/{k}", res[k], engine.global_step)
        engine.log.scalar("project/epoch_loss", row["loss"], engine.global_step)
        engine.log.line(row)
        improved = self.best is None or res["match_error_diff"] < self.best["match_error_diff"]
        if improved:
            self.best = {"epoch": epoch, **{k: res[k] for k in ("match_error_same", "match_error_diff",
                                                                "match_error_same_px", "match_error_diff_px")}}
            engine.save(Position(epoch + 1, 0, engine.global_step), "best.safetensors", optimizer=False)
        print(f"epoch {epoch}/{cfg.epochs}  loss {row['loss']:.4f}  lr {lr:.2e}  "
              f"match same {res['match_error_same']:.3f}  diff {res['match_error_diff']:.3f} (70-px frame; "
              f"px {res['match_error_same_px']:.2f}/{res['match_error_diff_px']:.2f})"
              f"{'  *best' if improved else ''}", flush=True)

    def checkpoint_meta(self, pos: Position) -> dict:
        # a projector checkpoint is always at an epoch's end: "epoch" is the finished one
        return {"epoch": pos.epoch - 1, "global_step": pos.global_step, "best": self.best, "history": self.history,
                "config": asdict(self.cfg), "channels": list(self.hc.channels), "projector": self.proj.mode,
                "trunk": "tuned" if self.cfg.tunes_trunk else "frozen"}

    def load(self, ck) -> Position:
        self.model.load_state_dict(ck.model)
        self.optimizer.load_state_dict(ck.optimizer)
        # the base lr of each group comes from the config (checkpoints written before the trunk option lack it)
        for g, base in zip(self.optimizer.param_groups, (self.cfg.lr, self.cfg.trunk_lr), strict=False):
            g["base_lr"] = base
        self.best, self.history = ck.meta.get("best"), ck.meta.get("history", [])
        return Position(ck.meta["epoch"] + 1, 0, ck.meta["global_step"])

    def finish(self, run: Path, stopped: bool, global_step: int) -> tuple[dict, Path]:
        best = run / "checkpoints" / "best.safetensors"
        if self.cfg.tunes_trunk and best.is_file():
            # the best epoch's trunk as a backbone file of its own: --backbone RUN reads its hypercolumn
            cfg = self.cfg
            trunk = frozen_trunk(cfg.arch, _weights(cfg.backbone), FeatureSpec().seed)
            load_backbone(trunk, load_tuned_trunk(best), strict=False)
            save_backbone(trunk, run / "backbone.safetensors")
        return {"run": run, "best": self.best, "history": self.history}, best


def _start_from(cfg: ProjectConfig, hc: Hypercolumn, proj: Projector) -> None:
    """Load ``cfg.init``'s projector into ``proj`` (and its trunk into ``hc``, when it carries one)."""
    init, c, trunk = read_projector(cfg.init)
    if init.channels != proj.channels or init.dim != proj.dim or init.mode != proj.mode:
        raise InputError(f"--init holds a {init.mode} projector {sum(init.channels)} -> {init.dim}, this run trains a "
                         f"{proj.mode} one {sum(proj.channels)} -> {proj.dim}: give the same --arch/--layers, --dim "
                         "and --projector", cfg.init)
    if trunk is None and not _same_backbone(c.get("backbone"), cfg.backbone):
        raise InputError(f"--init was trained on the frozen backbone {c.get('backbone')!r}, this run reads "
                         f"--backbone {cfg.backbone!r}: give the same backbone", cfg.init)
    proj.load_state_dict(init.state_dict())
    if trunk is not None:
        hc.extractor.load_state_dict(trunk)


def _weights(backbone: str | None) -> str | None:
    """A ``--backbone`` value as a weights path, ``None`` for the random initialisation."""
    return FeatureSpec(backbone=backbone or "random").weights


def _same_backbone(a: str | None, b: str | None) -> bool:
    """Whether two ``--backbone`` values name the same weights (paths resolved)."""
    wa, wb = _weights(a), _weights(b)
    return wa == wb or (wa is not None and wb is not None and Path(wa).resolve() == Path(wb).resolve())


def train_projector(cfg: ProjectConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train as configured; returns ``{"run": Path, "best": {...}, "history": [...]}``."""
    return train(cfg, ProjectMethod, resume=resume, progress=progress)

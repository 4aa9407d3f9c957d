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

Adam(lr 1e-3, betas (0.5, 0.999), wd 5e-4); per-epoch cosine ``lr_e = η_min + (lr − η_min)·½(1 + cos(π e/E))``
for 1-based epoch e (CosineAnnealingLR stepped at the start of each epoch, as the reference), η_min = lr·0.2³·0.1.
After every epoch, matching on ``val_pairs`` pairs of a seeded subset of ``val`` (never a test split).
Resume (``resume=True``) continues after the last finished epoch; data order and augmentation draws come
from ``(seed, epoch)`` and ``(seed, step)``, so a resumed run replays the same batches.

Without augmentation the (un-warped) input of an image never changes, so its hypercolumn maps are cached
(fp16, on the training device) up to ``feature_cache_gb``.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from equinv.augment.photometric import FACE_MEAN, FACE_STD, normalize
from equinv.augment.recipes import face_moco, make_view
from equinv.augment.tps import sample_tps, warp_images
from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.errors import InputError, SkipLog
from equinv.evaluate.matching import match_errors
from equinv.features.descriptors import descriptor_fn
from equinv.features.sources import ProjectedSource
from equinv.losses.equivariance import paper_equivariance_loss, reference_equivariance_loss, warp_targets
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps
from equinv.models.projector import Projector
from equinv.train.checkpoint import Checkpoint, save_checkpoint
from equinv.train.config import JsonConfig
from equinv.train.pretrain import step_seed

DEFAULT_DATA = "celeba:../shared/data/celeba?split=not_mafl"
DEFAULT_VAL = "celeba:../shared/data/celeba?split=mafl_train"


@dataclass
class ProjectConfig(JsonConfig):
    """Everything that defines a projector run (saved as ``RUN/config.json``)."""

    run_kind = "projector run"

    backbone: str = "random"  # pretraining run dir, weights file, or "random" (seeded random init)
    arch: str = "resnet18"
    layer: int = 4
    data: str = DEFAULT_DATA
    val: str = DEFAULT_VAL
    val_pairs: int = 500
    val_seed: int = 1
    out: str = "runs/project"
    mode: str = "reference"  # reference | paper
    dim: int = 64
    softargmax_mul: float | None = None  # None: 6.5 for d=64 else 7 (reference mode)
    temperature: float | None = None  # None: 8 for reference d=64, else 7
    power: float | None = None  # None: 0.5 (reference), 1.0 (paper)
    augment: bool | None = None  # None: True for reference, False for paper
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
    device: str | None = None
    match_batch: int = 16
    feature_cache_gb: float = 4.0
    log_every: int = 10
    skip_bad: bool = False

    # resolved defaults -------------------------------------------------------------------------
    @property
    def use_augment(self) -> bool:
        return (self.mode == "reference") if self.augment is None else bool(self.augment)

    @property
    def loss_temperature(self) -> float:
        if self.temperature is not None:
            return float(self.temperature)
        return 8.0 if (self.mode == "reference" and self.dim == 64) else 7.0

    @property
    def loss_power(self) -> float:
        if self.power is not None:
            return float(self.power)
        return 0.5 if self.mode == "reference" else 1.0

    @property
    def projector_mode(self) -> str:
        return "softmax" if self.mode == "reference" else "linear"

    @property
    def eta_min(self) -> float:
        return self.lr * 0.2**3 * 0.1

    def lr_at(self, epoch: int) -> float:
        """Learning rate of 1-based ``epoch`` (CosineAnnealingLR stepped before the epoch)."""
        return self.eta_min + (self.lr - self.eta_min) * 0.5 * (1.0 + math.cos(math.pi * epoch / self.epochs))

    def validate(self) -> None:
        if self.mode not in ("reference", "paper"):
            raise InputError(f"--mode must be reference or paper, got {self.mode!r}")
        if "test" in self.val.lower():
            raise InputError(f"--val {self.val!r} looks like a test split; model selection must not see test data")
        if self.size % self.train_size:
            raise InputError(f"--train-size {self.train_size} must divide --size {self.size}")


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


def _load_set(spec: str, pre: Preprocess, log: SkipLog, progress: bool) -> LandmarkDataset:
    ds = LandmarkDataset(read_index(spec, log), pre)
    ds.prepare(log, progress=progress)
    return ds


def _val_indices(n: int, pairs: int, seed: int) -> list[int]:
    """A seeded random subset of ``2·pairs`` images of a dataset of ``n`` (in random order)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[: 2 * pairs].tolist()


def build_model(cfg: ProjectConfig, device: torch.device) -> tuple[Hypercolumn, Projector]:
    weights = None if cfg.backbone in ("random", "none", "") else cfg.backbone
    trunk = frozen_trunk(cfg.arch, weights, seed=cfg.seed)
    hc = Hypercolumn(trunk, reference_taps(cfg.layer), size=cfg.size).to(device).eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        proj = Projector(hc.channels, cfg.dim, cfg.projector_mode, cfg.softargmax_mul)
    return hc, proj.to(device)


def train_projector(cfg: ProjectConfig, resume: bool = False, progress: bool = True) -> dict:
    """Train as configured; returns ``{"run": Path, "best": {...}, "history": [...]}``."""
    cfg.validate()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = Path(cfg.out)
    ckpt_dir = run / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.json")

    log = SkipLog(skip_bad=cfg.skip_bad)
    pre = Preprocess(size=cfg.size)
    train_ds = _load_set(cfg.data, pre, log, progress)
    images = ImageSet([train_ds], max_images=cfg.max_images, seed=cfg.seed)
    val_ds = _load_set(cfg.val, pre, log, progress)
    val_idx = _val_indices(len(val_ds), cfg.val_pairs, cfg.val_seed)
    if len(images) < 1 or len(val_idx) < 2:
        raise InputError("need at least one training image and two validation images")
    canvas, margin = train_ds.pre.canvas, train_ds.pre.margin
    view_cfg = face_moco(canvas=canvas, final=canvas if cfg.mode == "paper" else cfg.size)

    hc, proj = build_model(cfg, device)
    opt = torch.optim.Adam(proj.parameters(), lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=1e-8,
                           weight_decay=cfg.weight_decay)
    start_epoch, global_step, best, history = 1, 0, None, []
    last = ckpt_dir / "last.safetensors"
    if resume and last.exists():
        ck = Checkpoint(last, device="cpu")
        proj.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        start_epoch, global_step = ck.meta["epoch"] + 1, ck.meta["global_step"]
        best, history = ck.meta.get("best"), ck.meta.get("history", [])
        if progress:
            print(f"resuming {run} after epoch {ck.meta['epoch']}")

    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tb"), purge_step=global_step or None)
    cache = FeatureCache(len(images), cfg.feature_cache_gb if not cfg.use_augment else 0.0)
    stride = cfg.size / cfg.train_size
    steps_per_epoch = math.ceil(len(images) / cfg.batch_size)
    temperature, power = cfg.loss_temperature, cfg.loss_power
    sl = slice(margin, margin + cfg.size)

    def base_view(img_u8: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        """Normalised view: augmented through the MoCo chain, or plain (paper: whole canvas kept)."""
        if cfg.use_augment:
            return make_view(img_u8, None, None, view_cfg, gen).images
        x = normalize(img_u8.float().div_(255.0), FACE_MEAN, FACE_STD)
        return x if cfg.mode == "paper" else x[..., sl, sl]

    def save(name: str, epoch: int) -> None:
        meta = {"epoch": epoch, "global_step": global_step, "best": best, "history": history,
                "config": asdict(cfg), "channels": list(hc.channels)}
        save_checkpoint(ckpt_dir / name, proj.state_dict(), opt.state_dict() if name == "last.safetensors" else None,
                        meta=meta)

    def log_row(row: dict) -> None:
        with open(run / "log.jsonl", "a") as fh:
            fh.write(json.dumps(row) + "\n")

    for epoch in range(start_epoch, cfg.epochs + 1):
        lr = cfg.lr_at(epoch)
        for g in opt.param_groups:
            g["lr"] = lr
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch))
        proj.train()
        bar = tqdm(total=steps_per_epoch, desc=f"project {epoch}/{cfg.epochs}", unit="step",
                   disable=not progress, dynamic_ncols=True, leave=False)
        t0, losses = time.perf_counter(), []
        for s in range(steps_per_epoch):
            pos = order[s * cfg.batch_size : (s + 1) * cfg.batch_size]
            batch = images.__getitems__(pos.tolist())
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, 0, global_step))
            img = batch["image"].to(device, non_blocking=True)
            x = base_view(img, gen)
            if cfg.mode == "reference":
                with torch.no_grad():
                    maps = cache.get(pos, lambda x=x: hc.maps(x))
                f = proj(maps, cfg.train_size)
                loss = reference_equivariance_loss(f, stride, temperature, power)
            else:
                params = sample_tps(x.shape[0], cfg.tps, gen).to(device)
                warped = warp_images(x, params)
                with torch.no_grad():
                    maps_x = cache.get(pos, lambda x=x: hc.maps(x[..., sl, sl].contiguous()))
                    maps_w = hc.maps(warped[..., sl, sl].contiguous())
                f1 = proj(maps_w, cfg.train_size)
                f2 = proj(maps_x, cfg.train_size)
                tgt, valid = warp_targets(params, cfg.train_size, cfg.train_size, stride, canvas, margin, device)
                loss = paper_equivariance_loss(f1, f2, tgt, stride, valid, temperature, power)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            global_step += 1
            losses.append(loss.item())
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if global_step % cfg.log_every == 0:
                writer.add_scalar("project/loss", losses[-1], global_step)
                writer.add_scalar("project/lr", lr, global_step)
                log_row({"step": global_step, "epoch": epoch, "loss": losses[-1], "lr": lr})
        bar.close()
        train_s = time.perf_counter() - t0
        proj.eval()
        descriptors = descriptor_fn(ProjectedSource(hc, proj, cfg.size, "output"), cfg.size)
        res = match_errors(descriptors, val_ds, n_pairs=cfg.val_pairs,
                           seed=cfg.val_seed, batch=cfg.match_batch, indices=val_idx, device=device,
                           progress=progress)
        row = {"epoch": epoch, "loss": float(np.mean(losses)), "lr": lr, "train_s": train_s, "val": res}
        history.append({"epoch": epoch, "loss": row["loss"], **{k: res[k] for k in
                                                                 ("match_error_same", "match_error_diff")}})
        for k in ("match_error_same", "match_error_diff", "match_error_same_px", "match_error_diff_px"):
            writer.add_scalar(f"val/{k}", res[k], global_step)
        writer.add_scalar("project/epoch_loss", row["loss"], global_step)
        log_row(row)
        improved = best is None or res["match_error_diff"] < best["match_error_diff"]
        if improved:
            best = {"epoch": epoch, **{k: res[k] for k in ("match_error_same", "match_error_diff",
                                                           "match_error_same_px", "match_error_diff_px")}}
            save("best.safetensors", epoch)
        save("last.safetensors", epoch)
        print(f"epoch {epoch}/{cfg.epochs}  loss {row['loss']:.4f}  lr {lr:.2e}  "
              f"match same {res['match_error_same']:.3f}  diff {res['match_error_diff']:.3f} (70-px frame; "
              f"px {res['match_error_same_px']:.2f}/{res['match_error_diff_px']:.2f})"
              f"{'  *best' if improved else ''}", flush=True)
    writer.close()
    return {"run": run, "best": best, "history": history}


def load_projector(path: str | Path, device: str | torch.device = "cpu") -> tuple[Projector, dict]:
    """A trained projector from ``best``/``last.safetensors`` (or a run dir → its best), with its config dict."""
    p = Path(path)
    if p.is_dir():
        p = p / "checkpoints" / "best.safetensors"
    ck = Checkpoint(p, device="cpu")
    c = ProjectConfig(**{k: v for k, v in ck.meta["config"].items() if k in {f.name for f in fields(ProjectConfig)}})
    proj = Projector(ck.meta["channels"], c.dim, c.projector_mode, c.softargmax_mul)
    proj.load_state_dict(ck.model)
    return proj.to(device).eval(), ck.meta["config"]

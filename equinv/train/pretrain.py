"""MoCo pretraining as a production loop: one process or many (torchrun), resumable exactly.

The run itself (directory, lock, checkpoints, resume, budget, logs, guards) is the engine's
(:mod:`equinv.train.engine`); this module is the MoCo method. Layout of a run directory::

    RUN/config.json                      the full PretrainConfig (rewritten on resume)
    RUN/checkpoints/last.safetensors     model + queue + optimizer + position, written atomically
    RUN/checkpoints/epoch_0010.safetensors
    RUN/backbone.safetensors             clean trunk weights (torchvision key names) at the end
    RUN/tb/                              TensorBoard: loss, lr, img/s, queue statistics
    RUN/log.jsonl                        one JSON line per logged step (same figures)

Exact resume: the data order of each epoch comes from ``seed + epoch`` and every step's random
numbers (augmentation, shuffle-BN permutation) from ``(seed, rank, global step)``, so a run killed at
any point and resumed from its last checkpoint replays the same steps and ends with identical weights.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler

from equinv import distributed as D
from equinv import precision as precision_lib
from equinv.data.preprocess import Preprocess
from equinv.errors import InputError
from equinv.models.backbones import load_backbone, save_backbone
from equinv.models.moco import MoCo
from equinv.train.config import JsonConfig
from equinv.train.data import build_images, require_batch
from equinv.train.engine import Method, Position, peak_memory_mb, step_seed, train
from equinv.train.guards import check_options, check_precision
from equinv.train.presets import PRESETS
from equinv.train.views import ViewMaker


@dataclass
class PretrainConfig(JsonConfig):
    """Everything that defines a pretraining run (saved as ``RUN/config.json``)."""

    run_kind = "pretraining run"
    resumable = ("epochs", "max_minutes", "max_steps", "workers", "device", "precision", "channels_last", "ckpt_every",
                 "save_every", "log_every")
    per_invocation = ("max_minutes",)

    data: list[str] = field(default_factory=list)
    out: str = "runs/pretrain"
    arch: str = "resnet18"
    head: str = "linear"
    dim: int = 128
    queue: int = 4096
    momentum: float = 0.999
    temperature: float = 0.07
    batch_size: int = 256
    base_lr: float = 0.03
    lr: float | None = None
    sgd_momentum: float = 0.9
    weight_decay: float = 1e-4
    epochs: int = 800
    max_images: int | None = None
    max_minutes: float | None = None  # wall-clock budget of this invocation; stop at a checkpoint
    max_steps: int | None = None  # stop at a checkpoint once this many steps are done in all (resumable)
    recipe: str = "auto"
    tps: str | None = None
    flip: bool = False
    grayscale: float = 0.0
    size: int = 96
    bn_groups: int = 4
    query_bn: str = "groups"  # the reference's per-GPU query BN; "batch": whole-batch (equinv ≤ 0.1)
    seed: int = 0
    precision: str = precision_lib.DEFAULT  # fp32 | bf16 (autocast + channels-last; loss, logits, queue in fp32)
    channels_last: bool = False  # NHWC activations (implied by bf16)
    workers: int = 0
    device: str | None = None
    ckpt_every: int = 200
    save_every: int = 50
    log_every: int = 10
    skip_bad: bool = False
    init: str | None = None
    preset: str = "paper"  # the recipe the values started from (PRESETS); recorded, not applied again
    # equinv's equivariance term beside InfoNCE (0: off, the paper's MoCo; equinv.models.moco)
    dense: float = 0.0  # its weight
    dense_dim: int = 128  # descriptor channels of the dense head
    dense_temperature: float = 7.0  # logit multiplier of Eq. 3 (the reference projector's T)
    dense_power: float = 0.5  # exponent of the distance in Eq. 3 (the reference projector's)
    dense_points: int = 16  # a side × side grid of input points tracked through both views
    dense_aux: bool = False  # rebuild each point's descriptor from another image first (DVE's auxiliary)

    @classmethod
    def from_preset(cls, preset: str = "paper", **values) -> PretrainConfig:
        """A config from the named recipe of :data:`PRESETS`, ``values`` overriding it."""
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
        return cls(**{**PRESETS[preset], **values}, preset=preset)

    @classmethod
    def load(cls, path: Path) -> PretrainConfig:
        """A saved config; a run saved before ``query_bn`` existed normalised its queries as one batch."""
        cfg = super().load(path)
        if "query_bn" not in json.loads(path.read_text()):
            cfg.query_bn = "batch"
        return cfg

    @property
    def effective_lr(self) -> float:
        """``lr`` if given, else ``base_lr × batch_size / 256`` (linear scaling from the reference)."""
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256

    def validate(self) -> None:
        """Refuse a run that cannot train (no data, nonsensical numbers) before any work."""
        if not self.data:
            raise InputError("no training data: give at least one --data KIND:PATH")
        check_options(self, count=("epochs", "batch_size", "dim", "queue", "size", "bn_groups", "ckpt_every",
                                   "log_every", "max_images", "max_steps"),
                      count0=("workers", "save_every"),
                      positive=("temperature", "base_lr", "dense_temperature", "dense_power"),
                      nonneg=("lr", "weight_decay", "max_minutes", "dense"),
                      unit=("momentum", "sgd_momentum", "grayscale"))
        check_precision(self.precision)
        if self.query_bn not in ("groups", "batch"):
            raise InputError(f"--query-bn must be groups or batch, got {self.query_bn!r}")
        if self.dense:
            check_options(self, count=("dense_dim", "dense_points"))
        elif self.dense_aux:
            raise InputError("--dense-aux changes the equivariance term, which is off: add --dense W (W > 0)")
        if self.queue < self.batch_size:
            raise InputError(f"--queue {self.queue} is smaller than --batch-size {self.batch_size}")


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The reference's per-epoch cosine: ``base·½(1 + cos(π·e/E))`` for 1-based epoch ``e``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def _identity(batch: dict) -> dict:
    return batch


class MoCoMethod(Method):
    """MoCo v1 steps (protocol §1) for the engine; under torchrun, one rank of a DDP job."""

    name = "pretrain"
    distributed = True

    def __init__(self, cfg: PretrainConfig, device: torch.device, progress: bool):
        self.cfg, self.device = cfg, device
        check_precision(cfg.precision, device)
        self.rank, world = D.rank(), D.world_size()
        if cfg.batch_size % world:
            raise InputError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
        self.local_batch = cfg.batch_size // world
        self.views = ViewMaker.from_config(cfg)
        self.images = build_images(cfg, Preprocess(size=cfg.size, context=self.views.context),
                                   progress and D.is_main())
        require_batch(len(self.images), cfg.batch_size)
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank
        self.model = MoCo(
            cfg.arch, dim=cfg.dim, head=cfg.head, queue_size=cfg.queue, momentum=cfg.momentum,
            temperature=cfg.temperature, bn_groups=cfg.bn_groups, query_bn=cfg.query_bn,
            dense_dim=cfg.dense_dim if cfg.dense else 0, dense_weight=cfg.dense,
            dense_temperature=cfg.dense_temperature, dense_power=cfg.dense_power, dense_aux=cfg.dense_aux,
        ).to(device)
        precision_lib.prepare(self.model, cfg.precision, cfg.channels_last)
        if D.is_main():
            precision_lib.warn_if_emulated(cfg.precision, device)
        if cfg.init:
            # Start both encoders from given trunk weights (e.g. a user's torchvision ImageNet file).
            report = load_backbone(self.model.encoder_q, cfg.init)
            self.model.encoder_k.load_state_dict(self.model.encoder_q.state_dict())
            if D.is_main():
                print(f"initialised from {report}")
        self.lr0 = cfg.effective_lr
        self.optimizer = torch.optim.SGD(self.model.encoder_q.parameters(), lr=self.lr0, momentum=cfg.sgd_momentum,
                                         weight_decay=cfg.weight_decay)
        self.sampler = DistributedSampler(self.images, num_replicas=world, rank=self.rank, shuffle=True,
                                          seed=cfg.seed, drop_last=True)
        self.steps_per_epoch = len(self.sampler) // self.local_batch
        self.images_per_step = cfg.batch_size
        self.net: torch.nn.Module | None = None  # DDP wrapper, made after a resume loaded the weights
        self.model.train()

    def set_epoch(self, epoch: int) -> None:
        lr = cosine_lr(self.lr0, epoch, self.cfg.epochs)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        self.sampler.set_epoch(epoch)

    def batches(self, epoch: int, start: int) -> DataLoader:
        # Resuming mid-epoch skips batches of indices (cheap), never decoded images.
        batches = list(BatchSampler(self.sampler, self.local_batch, drop_last=True))[start:]
        return DataLoader(self.images, batch_sampler=batches, collate_fn=_identity, num_workers=self.cfg.workers)

    def step(self, batch: dict, global_step: int) -> tuple[torch.Tensor, dict]:
        if self.net is None:
            self.net = DistributedDataParallel(self.model) if D.world_size() > 1 else self.model
        torch.manual_seed(step_seed(self.cfg.seed, self.rank, global_step))
        gen = torch.Generator().manual_seed(step_seed(self.cfg.seed, self.rank, global_step))
        images = batch["image"].to(self.device, non_blocking=True)
        if self.cfg.dense:
            im_q, im_k, points = self.views.tracked(images, gen, self.cfg.dense_points)
        else:
            (im_q, im_k), points = self.views(images, gen), None
        prec, cl = self.cfg.precision, self.cfg.channels_last
        with precision_lib.autocast(self.device, prec):
            loss, stats = self.net(precision_lib.inputs(im_q, prec, cl), precision_lib.inputs(im_k, prec, cl),
                                   points)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), stats

    def log_extra(self, stats: dict) -> dict:
        return {**{k: float(v) for k, v in stats.items()},
                "queue_norm": float(self.model.queue.norm(dim=1).mean()),
                "peak_mem_mb": peak_memory_mb(self.device)}

    def checkpoint_meta(self, pos: Position) -> dict:
        return {**super().checkpoint_meta(pos), "arch": self.cfg.arch}

    def finish(self, run: Path, stopped: bool, global_step: int) -> tuple[Path, Path]:
        if D.is_main():
            save_backbone(self.model, run / "backbone.safetensors")
        return run, run


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train MoCo as configured; returns the run directory. Call under torchrun for several processes."""
    return train(cfg, MoCoMethod, resume=resume, progress=progress)

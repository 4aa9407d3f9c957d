"""DVE baseline training (Thewlis et al. 2019; protocol.md §7), laid out and resumable like MoCo pretraining.

Pairs: on the canvas (136 px for a 96 view), ``dve_pair`` gives view1 = B = TPS₂(A), view2 = A = TPS₁(I)
(TPS₁ at half strength, affine full) and the map ``grid`` from view1 pixels to view2 pixels; both views are
quantised to uint8 (the reference's ``.to(torch.uint8)``), the margin is sliced off (20 px: 136 → 96) and
each view independently gets JPEG noise → ColorJitter(.4, .4, .4) → PCA lighting → Normalize (face
statistics), no RRC. Finally the views are resized to ``input_size`` (96 for the Hourglass, 70 for
SmallNet; bilinear, antialiased) and ``grid`` is evaluated exactly in that frame from the TPS parameters.

Schedules (per epoch, as the reference's epoch-stepped schedulers):

- hourglass: batch 16, Adam(1e-3, amsgrad, wd 0), StepLR(50, 0.1) (i.e. ×0.1 at epochs 50, 100, …),
  descriptors L2-normalised ×20 in the loss;
- smallnet: batch 32, the same Adam with biases at lr 1e-5, MultiStep [70, 90] ×0.1, no normalisation.

Run directory::

    RUN/config.json                     the DVEConfig
    RUN/checkpoints/last.safetensors    model + optimizer + position (atomic)
    RUN/checkpoints/epoch_0050.safetensors
    RUN/descriptor.safetensors          the network's weights, arch/dim/input_size in metadata (load_dve)
    RUN/tb/, RUN/log.jsonl

Exact resume: the image order of epoch ``e`` comes from ``seed + e`` and every random draw of a step from
``step_seed(seed, 0, global step)``, so a run stopped anywhere (``--max-minutes``, a crash) and resumed
from its last checkpoint ends with the same weights.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from equinv import precision as precision_lib
from equinv.augment import tps as T
from equinv.augment.recipes import ViewConfig, make_view, to_float
from equinv.data.preprocess import FACE_CONTEXT, Preprocess
from equinv.errors import InputError
from equinv.losses.dve import dve_loss
from equinv.models.dve import ARCHS, build_dve, count_parameters, save_dve
from equinv.train.config import JsonConfig
from equinv.train.data import build_images, require_batch
from equinv.train.engine import Method, Position, peak_memory_mb, step_seed, train
from equinv.train.guards import check_options, check_precision

ARCH_DEFAULTS = {
    "hourglass": {"batch_size": 16, "input_size": 96, "normalize_vectors": True, "bias_lr": None},
    "smallnet": {"batch_size": 32, "input_size": 70, "normalize_vectors": False, "bias_lr": 1e-5},
}


@dataclass
class DVEConfig(JsonConfig):
    """A DVE training run (saved as ``RUN/config.json``). ``None`` fields take the arch's defaults."""

    run_kind = "DVE run"
    resumable = ("epochs", "max_minutes", "workers", "device", "precision", "channels_last", "ckpt_every",
                 "save_every", "log_every", "loss_chunk")
    per_invocation = ("max_minutes",)

    data: list[str] = field(default_factory=list)
    out: str = "runs/dve"
    arch: str = "hourglass"
    dim: int = 64
    size: int = 96  # view side after slicing the margin (canvas = size·136/96)
    input_size: int | None = None  # network input side (hourglass 96, smallnet 70)
    batch_size: int | None = None  # hourglass 16, smallnet 32
    lr: float = 1e-3
    bias_lr: float | None = None  # smallnet 1e-5, hourglass: same as lr (set = lr to disable)
    weight_decay: float = 0.0
    epochs: int = 100
    milestones: list[int] | None = None  # hourglass: 50, 100, ... (StepLR 50); smallnet [70, 90]
    gamma: float = 0.1
    normalize_vectors: bool | None = None  # hourglass True, smallnet False
    power: float = 0.5
    max_images: int | None = None
    max_minutes: float | None = None
    seed: int = 0
    precision: str = precision_lib.DEFAULT  # fp32 | bf16: the network pass under autocast; the loss in fp32
    channels_last: bool = False  # NHWC activations (implied by bf16)
    workers: int = 0
    device: str | None = None
    ckpt_every: int = 200
    save_every: int = 50
    log_every: int = 10
    skip_bad: bool = False
    loss_chunk: int | None = None

    def resolved(self) -> DVEConfig:
        """A copy with every arch-dependent default filled in."""
        if self.arch not in ARCHS:
            raise InputError(f"unknown --arch {self.arch!r}; choose one of {', '.join(ARCHS)}")
        d = ARCH_DEFAULTS[self.arch]
        vals = asdict(self)
        for k in ("batch_size", "input_size", "normalize_vectors"):
            if vals[k] is None:
                vals[k] = d[k]
        if vals["bias_lr"] is None:
            vals["bias_lr"] = d["bias_lr"]
        if vals["milestones"] is None:
            vals["milestones"] = ([70, 90] if self.arch == "smallnet"
                                  else list(range(50, max(self.epochs, 50) + 1, 50)))
        return DVEConfig(**vals)

    def validate(self) -> None:
        """Refuse a run that cannot train (no data, nonsensical numbers) before any work; call on ``resolved()``."""
        if not self.data:
            raise InputError("no training data: give at least one --data KIND:PATH")
        check_options(self, count=("epochs", "batch_size", "dim", "size", "input_size", "ckpt_every", "log_every",
                                   "loss_chunk", "max_images"),
                      count0=("workers", "save_every"), positive=("power",),
                      nonneg=("lr", "bias_lr", "weight_decay", "gamma", "max_minutes"))
        check_precision(self.precision)

    def lr_at(self, epoch: int, base: float) -> float:
        """Learning rate of (1-based) ``epoch``: ``base · gamma^#{m in milestones : m < epoch}``."""
        return base * self.gamma ** sum(1 for m in (self.milestones or []) if m < epoch)


def make_pairs(images: torch.Tensor, size: int, input_size: int, generator: torch.Generator
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """DVE training pairs from uint8 canvases ``(B, 3, N, N)``: ``(view1, view2, grid)`` at ``input_size``.

    ``grid[b, i, j]`` = location (x, y) in view2 of pixel ``(j, i)`` of view1, both in the
    ``input_size`` frame (the pixel-centre convention of a resize ``x_in = (x + ½)·S/size − ½``).
    """
    b, _, n, _ = images.shape
    dev = images.device
    margin = (n - size) // 2
    pair = T.dve_pair(to_float(images), generator)
    v1 = (pair.view1 * 255).clamp(0, 255).to(torch.uint8)[:, :, margin:margin + size, margin:margin + size]
    v2 = (pair.view2 * 255).clamp(0, 255).to(torch.uint8)[:, :, margin:margin + size, margin:margin + size]
    vcfg = ViewConfig(canvas=size, final=size, rrc=False)
    x1 = make_view(v1, None, None, vcfg, generator).images
    x2 = make_view(v2, None, None, vcfg, generator).images
    k = size / input_size
    pix = torch.arange(input_size, device=dev, dtype=torch.float32)
    yy, xx = torch.meshgrid(pix, pix, indexing="ij")
    pts = (torch.stack((xx.reshape(-1), yy.reshape(-1)), -1) + 0.5) * k - 0.5 + margin  # canvas pixels
    g = T.map_points(pair.params2, pts, n, n)  # (B, S², 2) in the canvas
    grid = ((g - margin + 0.5) / k - 0.5).reshape(b, input_size, input_size, 2).float()
    if input_size != size:
        x1 = F.interpolate(x1, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
        x2 = F.interpolate(x2, size=(input_size, input_size), mode="bilinear", align_corners=False, antialias=True)
    return x1, x2, grid


def _optimizer(model: torch.nn.Module, cfg: DVEConfig) -> torch.optim.Optimizer:
    if cfg.bias_lr is None:
        groups = [{"params": list(model.parameters()), "lr": cfg.lr, "base_lr": cfg.lr}]
    else:
        named = list(model.named_parameters())
        groups = [
            {"params": [p for n, p in named if not n.endswith("bias")], "lr": cfg.lr, "base_lr": cfg.lr},
            {"params": [p for n, p in named if n.endswith("bias")], "lr": cfg.bias_lr, "base_lr": cfg.bias_lr},
        ]
    return torch.optim.Adam(groups, lr=cfg.lr, weight_decay=cfg.weight_decay, amsgrad=True)


class DVEMethod(Method):
    """DVE steps for the engine: one process; pairs and loss as the reference (module docstring)."""

    name = "dve"

    def __init__(self, cfg: DVEConfig, device: torch.device, progress: bool):
        self.cfg, self.device = cfg, device
        check_precision(cfg.precision, device)
        self.images = build_images(cfg, Preprocess(size=cfg.size, context=FACE_CONTEXT), progress)
        require_batch(len(self.images), cfg.batch_size)
        torch.manual_seed(cfg.seed)
        self.model = precision_lib.prepare(build_dve(cfg.arch, cfg.dim).to(device), cfg.precision, cfg.channels_last)
        precision_lib.warn_if_emulated(cfg.precision, device)
        self.optimizer = _optimizer(self.model, cfg)
        self.steps_per_epoch = len(self.images) // cfg.batch_size
        self.images_per_step = cfg.batch_size
        self.model.train()

    def set_epoch(self, epoch: int) -> None:
        for g in self.optimizer.param_groups:
            g["lr"] = self.cfg.lr_at(epoch, g["base_lr"])

    def batches(self, epoch: int, start: int):
        bs = self.cfg.batch_size
        order = torch.randperm(len(self.images), generator=torch.Generator().manual_seed(self.cfg.seed + epoch))
        for step in range(start, self.steps_per_epoch):
            yield self.images.__getitems__(order[step * bs:(step + 1) * bs].tolist())["image"]

    def step(self, batch: torch.Tensor, global_step: int) -> tuple[torch.Tensor, dict]:
        cfg = self.cfg
        batch = batch.to(self.device, non_blocking=True)
        seed = step_seed(cfg.seed, 0, global_step)
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        x1, x2, grid = make_pairs(batch, cfg.size, cfg.input_size, gen)
        feats = precision_lib.run(self.model, torch.cat((x1, x2)), cfg.precision, cfg.channels_last)
        f1, f2 = feats.float().chunk(2)
        loss = dve_loss(f1, f2, grid.to(self.device), cfg.normalize_vectors, cfg.power, chunk=cfg.loss_chunk)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach(), {}

    def log_extra(self, stats: dict) -> dict:
        return {"peak_mem_mb": peak_memory_mb(self.device)} if self.device.type == "cuda" else {}

    def checkpoint_meta(self, pos: Position) -> dict:
        return {**super().checkpoint_meta(pos), "arch": self.cfg.arch, "dim": self.cfg.dim,
                "input_size": self.cfg.input_size}

    def finish(self, run: Path, stopped: bool, global_step: int) -> tuple[Path, Path]:
        path = save_dve(self.model, run / "descriptor.safetensors", self.cfg.arch, input_size=self.cfg.input_size,
                        global_step=global_step, finished=not stopped, parameters=count_parameters(self.model))
        return run, path


def train_dve(cfg: DVEConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a DVE descriptor network as configured; returns the run directory.

    Stops early (after a checkpoint at the exact position) once ``max_minutes`` of wall clock have passed;
    ``train_dve(DVEConfig.resume(RUN, {}), resume=True)`` continues from there.
    """
    return train(cfg.resolved(), DVEMethod, resume=resume, progress=progress)

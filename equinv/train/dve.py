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

import json
import os
import signal
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from equinv.augment import tps as T
from equinv.augment.recipes import ViewConfig, make_view, to_float
from equinv.data.preprocess import FACE_CONTEXT, Preprocess
from equinv.errors import InputError
from equinv.losses.dve import dve_loss
from equinv.models.dve import ARCHS, build_dve, count_parameters, save_dve
from equinv.train.checkpoint import Checkpoint, save_checkpoint
from equinv.train.config import JsonConfig
from equinv.train.pretrain import build_images, step_seed

ARCH_DEFAULTS = {
    "hourglass": {"batch_size": 16, "input_size": 96, "normalize_vectors": True, "bias_lr": None},
    "smallnet": {"batch_size": 32, "input_size": 70, "normalize_vectors": False, "bias_lr": 1e-5},
}


@dataclass
class DVEConfig(JsonConfig):
    """A DVE training run (saved as ``RUN/config.json``). ``None`` fields take the arch's defaults."""

    run_kind = "DVE run"

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


def train_dve(cfg: DVEConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train a DVE descriptor network as configured; returns the run directory.

    Stops early (after a checkpoint at the exact position) once ``max_minutes`` of wall clock have passed;
    ``train_dve(DVEConfig.load(RUN/config.json), resume=True)`` continues from there.
    """
    t_start = time.perf_counter()
    if not cfg.data:
        raise InputError("no training data: give at least one --data KIND:PATH")
    cfg = cfg.resolved()
    device = torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    run = Path(cfg.out)
    ckpt_dir = run / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    cfg.save(run / "config.json")

    pre = Preprocess(size=cfg.size, context=FACE_CONTEXT)
    images = build_images(cfg, pre, progress)
    if len(images) < cfg.batch_size:
        raise InputError(f"only {len(images)} images for a batch of {cfg.batch_size}; lower --batch-size")

    torch.manual_seed(cfg.seed)
    model = build_dve(cfg.arch, cfg.dim).to(device)
    opt = _optimizer(model, cfg)
    start_epoch, start_step, global_step = 1, 0, 0
    last = ckpt_dir / "last.safetensors"
    if resume and last.exists():
        ck = Checkpoint(last, device="cpu")
        model.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        start_epoch, start_step = ck.meta["epoch"], ck.meta["step_in_epoch"]
        global_step = ck.meta["global_step"]
        if progress:
            print(f"resuming {run} at epoch {start_epoch}, step {start_step} (global step {global_step})")

    steps_per_epoch = len(images) // cfg.batch_size
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(run / "tb"), purge_step=global_step or None)
    bar = tqdm(total=steps_per_epoch * cfg.epochs, initial=global_step, desc=f"dve-{cfg.arch}", unit="step",
               disable=not progress, dynamic_ncols=True)
    kill_at = int(os.environ.get("EQUINV_TEST_KILL_AT_STEP", "0"))  # test hook: simulate a crash
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0

    def save(epoch: int, step_in_epoch: int, name: str = "last.safetensors") -> None:
        meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "arch": cfg.arch,
                "dim": cfg.dim, "input_size": cfg.input_size}
        save_checkpoint(ckpt_dir / name, model.state_dict(), opt.state_dict(), meta=meta)

    model.train()
    stopped = False
    t_last, n_last = time.perf_counter(), 0
    for epoch in range(start_epoch, cfg.epochs + 1):
        for g in opt.param_groups:
            g["lr"] = cfg.lr_at(epoch, g["base_lr"])
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(cfg.seed + epoch))
        for step in range(start_step, steps_per_epoch):
            idx = order[step * cfg.batch_size:(step + 1) * cfg.batch_size].tolist()
            batch = images.__getitems__(idx)["image"].to(device, non_blocking=True)
            seed = step_seed(cfg.seed, 0, global_step)
            torch.manual_seed(seed)
            gen = torch.Generator().manual_seed(seed)
            x1, x2, grid = make_pairs(batch, cfg.size, cfg.input_size, gen)
            feats = model(torch.cat((x1, x2)))
            f1, f2 = feats.chunk(2)
            loss = dve_loss(f1, f2, grid.to(device), cfg.normalize_vectors, cfg.power, chunk=cfg.loss_chunk)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            global_step += 1
            n_last += cfg.batch_size
            bar.update()
            if global_step % cfg.log_every == 0 or step + 1 == steps_per_epoch:
                dt = time.perf_counter() - t_last
                row = {"step": global_step, "epoch": epoch, "loss": float(loss.detach()),
                       "lr": opt.param_groups[0]["lr"], "img_per_s": n_last / max(dt, 1e-9)}
                if device.type == "cuda":
                    row["peak_mem_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
                t_last, n_last = time.perf_counter(), 0
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        writer.add_scalar(f"dve/{k}", v, global_step)
                with open(run / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.3f}", epoch=epoch)
            if kill_at and global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            out_of_time = budget is not None and time.perf_counter() - t_start >= budget
            if step + 1 < steps_per_epoch and (out_of_time or global_step % cfg.ckpt_every == 0):
                save(epoch, step + 1)
            if out_of_time:
                stopped = True
                break
        start_step = 0
        if stopped and step + 1 < steps_per_epoch:
            break
        save(epoch + 1, 0)
        if cfg.save_every and epoch % cfg.save_every == 0:
            save(epoch + 1, 0, f"epoch_{epoch:04d}.safetensors")
        if stopped:
            break
    bar.close()
    writer.close()
    save_dve(model, run / "descriptor.safetensors", cfg.arch, input_size=cfg.input_size, global_step=global_step,
             finished=not stopped, parameters=count_parameters(model))
    if progress:
        state = "stopped at the time budget" if stopped else "done"
        print(f"{state}: {global_step} steps; weights in {run / 'descriptor.safetensors'}")
    return run

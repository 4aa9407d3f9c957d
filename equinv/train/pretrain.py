"""MoCo pretraining as a production loop: one process or many (torchrun), resumable exactly.

Layout of a run directory::

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
import os
import resource
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler
from tqdm.auto import tqdm

from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.errors import InputError, SkipLog
from equinv.models.backbones import load_backbone, save_backbone
from equinv.models.moco import MoCo
from equinv.train import distributed as D
from equinv.train.checkpoint import Checkpoint, save_checkpoint
from equinv.train.config import JsonConfig
from equinv.train.views import ViewMaker


@dataclass
class PretrainConfig(JsonConfig):
    """Everything that defines a pretraining run (saved as ``RUN/config.json``)."""

    run_kind = "pretraining run"

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
    recipe: str = "auto"
    tps: str | None = None
    flip: bool = False
    grayscale: float = 0.0
    size: int = 96
    bn_groups: int = 4
    seed: int = 0
    workers: int = 0
    device: str | None = None
    ckpt_every: int = 200
    save_every: int = 50
    log_every: int = 10
    skip_bad: bool = False
    init: str | None = None

    @property
    def effective_lr(self) -> float:
        """``lr`` if given, else ``base_lr × batch_size / 256`` (linear scaling from the reference)."""
        return self.lr if self.lr is not None else self.base_lr * self.batch_size / 256


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The reference's per-epoch cosine: ``base·½(1 + cos(π·e/E))`` for 1-based epoch ``e``."""
    return base * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs))


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of every random draw of one training step on one rank."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def build_images(cfg: PretrainConfig, pre: Preprocess, progress: bool) -> ImageSet:
    """Read every ``--data`` spec, cache decoded canvases (rank 0 first) and concatenate them."""
    log = SkipLog(skip_bad=cfg.skip_bad)
    sets = []
    for spec in cfg.data:
        ds = LandmarkDataset(read_index(spec, log), pre)
        if D.is_main():
            ds.prepare(log, progress=progress)
        D.barrier()
        if not D.is_main():
            ds.prepare(log, progress=False)
        sets.append(ds)
    if log.skips and D.is_main():
        print(f"{len(log.skips)} bad input(s) skipped, e.g. {log.skips[0]}")
    return ImageSet(sets, max_images=cfg.max_images, seed=cfg.seed)


def _identity(batch: dict) -> dict:
    return batch


def _agree(flag: bool, device) -> bool:
    """Rank 0's ``flag`` on every rank (the flag itself without torch.distributed)."""
    if not D.is_dist():
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(D.broadcast_(t, 0).item() > 0.5)


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def pretrain(cfg: PretrainConfig, resume: bool = False, progress: bool = True) -> Path:
    """Train MoCo as configured; returns the run directory. Call under torchrun for several processes."""
    if not cfg.data:
        raise InputError("no training data: give at least one --data KIND:PATH")
    device = D.setup() if cfg.device is None else torch.device(cfg.device)
    if cfg.device is not None and D.world_size() == 1:
        D.setup()
    rank, world = D.rank(), D.world_size()
    if cfg.batch_size % world:
        raise InputError(f"--batch-size {cfg.batch_size} is not divisible by {world} processes")
    local_batch = cfg.batch_size // world
    run = Path(cfg.out)
    ckpt_dir = run / "checkpoints"
    if D.is_main():
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(run / "config.json")

    views = ViewMaker.from_config(cfg)
    pre = Preprocess(size=cfg.size, context=views.context)
    images = build_images(cfg, pre, progress and D.is_main())
    if len(images) < cfg.batch_size:
        raise InputError(f"only {len(images)} images for a batch of {cfg.batch_size}; lower --batch-size")

    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = MoCo(
        cfg.arch, dim=cfg.dim, head=cfg.head, queue_size=cfg.queue, momentum=cfg.momentum,
        temperature=cfg.temperature, bn_groups=cfg.bn_groups,
    ).to(device)
    if cfg.init:
        # Start both encoders from given trunk weights (e.g. a user's torchvision ImageNet file).
        report = load_backbone(model.encoder_q, cfg.init)
        model.encoder_k.load_state_dict(model.encoder_q.state_dict())
        if D.is_main():
            print(f"initialised from {report}")
    lr0 = cfg.effective_lr
    opt = torch.optim.SGD(
        model.encoder_q.parameters(), lr=lr0, momentum=cfg.sgd_momentum, weight_decay=cfg.weight_decay
    )
    start_epoch, start_step, global_step = 1, 0, 0
    last = ckpt_dir / "last.safetensors"
    if resume and last.exists():
        ck = Checkpoint(last, device="cpu")
        model.load_state_dict(ck.model)
        opt.load_state_dict(ck.optimizer)
        start_epoch, start_step = ck.meta["epoch"], ck.meta["step_in_epoch"]
        global_step = ck.meta["global_step"]
        if D.is_main():
            print(f"resuming {run} at epoch {start_epoch}, step {start_step} (global step {global_step})")
    net = DistributedDataParallel(model) if world > 1 else model

    sampler = DistributedSampler(images, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed, drop_last=True)
    steps_per_epoch = len(sampler) // local_batch
    writer = None
    if D.is_main():
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(run / "tb"), purge_step=global_step or None)
    total_steps = steps_per_epoch * cfg.epochs
    bar = tqdm(
        total=total_steps, initial=global_step, desc="pretrain", unit="step", disable=not (progress and D.is_main()),
        dynamic_ncols=True,
    )
    kill_at = int(os.environ.get("EQUINV_TEST_KILL_AT_STEP", "0"))  # test hook: simulate a crash

    def save(epoch: int, step_in_epoch: int, name: str = "last.safetensors") -> None:
        if D.is_main():
            meta = {"epoch": epoch, "step_in_epoch": step_in_epoch, "global_step": global_step, "arch": cfg.arch}
            save_checkpoint(ckpt_dir / name, model.state_dict(), opt.state_dict(), meta=meta)
        D.barrier()

    model.train()
    t_last, n_last = time.perf_counter(), 0
    t_start = time.perf_counter()
    budget = None if cfg.max_minutes is None else cfg.max_minutes * 60.0
    stopped = False
    for epoch in range(start_epoch, cfg.epochs + 1):
        lr = cosine_lr(lr0, epoch, cfg.epochs)
        for g in opt.param_groups:
            g["lr"] = lr
        sampler.set_epoch(epoch)
        # Resuming mid-epoch skips batches of indices (cheap), never decoded images.
        batches = list(BatchSampler(sampler, local_batch, drop_last=True))[start_step:]
        loader = DataLoader(images, batch_sampler=batches, collate_fn=_identity, num_workers=cfg.workers)
        step_in_epoch = 0
        for batch in loader:
            step_in_epoch_now = step_in_epoch + start_step
            torch.manual_seed(step_seed(cfg.seed, rank, global_step))
            gen = torch.Generator().manual_seed(step_seed(cfg.seed, rank, global_step))
            im_q, im_k = views(batch["image"].to(device, non_blocking=True), gen)
            loss, stats = net(im_q, im_k)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            global_step += 1
            step_in_epoch += 1
            bar.update()
            n_last += cfg.batch_size
            if D.is_main() and (global_step % cfg.log_every == 0 or step_in_epoch_now + 1 == steps_per_epoch):
                dt = time.perf_counter() - t_last
                ips = n_last / max(dt, 1e-9)
                t_last, n_last = time.perf_counter(), 0
                row = {
                    "step": global_step, "epoch": epoch, "loss": loss.item(), "lr": lr, "img_per_s": ips,
                    **{k: float(v) for k, v in stats.items()},
                    "queue_norm": float(model.queue.norm(dim=1).mean()),
                    "peak_mem_mb": _peak_memory_mb(device),
                }
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        writer.add_scalar(f"pretrain/{k}", v, global_step)
                with open(run / "log.jsonl", "a") as fh:
                    fh.write(json.dumps(row) + "\n")
                bar.set_postfix(loss=f"{row['loss']:.3f}", img_s=f"{ips:.0f}", epoch=epoch)
            # every rank must stop at the same step: rank 0's clock decides
            out_of_time = budget is not None and _agree(time.perf_counter() - t_start >= budget, device)
            last_in_epoch = step_in_epoch_now + 1 == steps_per_epoch
            if not last_in_epoch and (out_of_time or global_step % cfg.ckpt_every == 0):
                save(epoch, step_in_epoch_now + 1)
            if kill_at and global_step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
            if out_of_time:
                stopped = True
                break
        if stopped and step_in_epoch_now + 1 < steps_per_epoch:
            break
        start_step = 0
        save(epoch + 1, 0)
        if D.is_main() and cfg.save_every and epoch % cfg.save_every == 0:
            save(epoch + 1, 0, f"epoch_{epoch:04d}.safetensors")
        if stopped:
            break
    bar.close()
    if D.is_main():
        save_backbone(model, run / "backbone.safetensors")
        state = "stopped at the time budget (continue with --resume)" if stopped else "done"
        print(f"{state}: {global_step} steps; peak memory {_peak_memory_mb(device):.0f} MB; weights in {run}")
        writer.close()
    D.barrier()
    return run

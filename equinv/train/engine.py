"""One training-run engine: MoCo pretraining, the DVE baseline and projector training plug into it.

A training method (:class:`Method`) owns its data, model, optimizer and the maths of one step. The
engine owns the run around it, once for all three:

- the run directory (:mod:`equinv.train.rundir`): an exclusive lock, a fresh run refused where a run
  already is, stale temporary files removed, ``config.json`` written;
- checkpoints at exact positions (every ``ckpt_every`` steps, at each epoch end, when the wall-clock
  budget ``max_minutes`` of this invocation is spent), ``epoch_NNNN`` kept every ``save_every`` epochs,
  and resume from ``checkpoints/last.safetensors``;
- ``log.jsonl`` and TensorBoard, continued without repeated steps after a resume (:mod:`.runlog`);
- guards (:mod:`.guards`): options checked before any work; a non-finite loss or weight stops the run
  with a one-line error before anything is written from it, so the last good checkpoint stays;
- ranks: only rank 0 writes; decisions that end the loop (budget, divergence) are taken together, and
  a collective that times out ends the run with one line naming the rank.

Exact resume: a method draws the data order of an epoch from ``(seed, epoch)`` and the random numbers
of a step from ``step_seed(seed, rank, global step)``, so a run resumed from any checkpoint replays
the same steps and ends with the same weights.

Test hooks (environment): ``EQUINV_TEST_KILL_AT_STEP=N`` SIGKILLs the process after step N (and the
checkpoint due there); ``EQUINV_TEST_NAN_AT_STEP=N`` turns step N's loss and weights into NaN.
"""

from __future__ import annotations

import math
import os
import resource
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from equinv import distributed as D
from equinv.checkpoint import Checkpoint, save_checkpoint
from equinv.errors import InputError
from equinv.train.guards import FiniteGuard, TrainingError
from equinv.train.rundir import RunDir
from equinv.train.runlog import RunLog


@dataclass(frozen=True)
class Position:
    """Where a run stands: ``step`` steps of (1-based) ``epoch`` done, ``global_step`` steps in all."""

    epoch: int
    step: int
    global_step: int


def step_seed(seed: int, rank: int, step: int) -> int:
    """Seed of every random draw of one training step on one rank."""
    return (seed * 1_000_003 + rank * 7_919 + step * 104_729) % (2**63 - 1)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory of this process so far: CUDA allocations on a GPU, the resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Method:
    """A training method. ``__init__(cfg, device, progress)`` builds data, ``model`` and ``optimizer``.

    The engine calls, per epoch, :meth:`set_epoch`, then :meth:`step` on each batch of
    :meth:`batches`, then :meth:`end_epoch`; at the end :meth:`finish` writes the result weights.
    """

    name = "train"  # progress bar and TensorBoard tag prefix
    distributed = False  # True: runs under torchrun, one process per rank
    log_epoch_end = True  # also log the last step of each epoch (besides every log_every steps)
    images_per_step: int | None = None  # when set, log lines carry img_per_s
    model: nn.Module
    optimizer: torch.optim.Optimizer
    steps_per_epoch: int

    def set_epoch(self, epoch: int) -> None:
        """Prepare (1-based) ``epoch``: learning rate, data order."""

    def batches(self, epoch: int, start: int) -> Iterable[Any]:
        """The batches of ``epoch`` from step ``start`` on."""
        raise NotImplementedError

    def step(self, batch: Any, global_step: int) -> tuple[Tensor, dict]:
        """One optimisation step; returns the (detached) loss and statistics for the log."""
        raise NotImplementedError

    def log_extra(self, stats: dict) -> dict:
        """Figures a log line adds after step, epoch, loss, lr (and img_per_s)."""
        return {}

    def end_epoch(self, epoch: int, engine: Engine) -> None:
        """After the last step of ``epoch``, before its checkpoint (e.g. validation)."""

    def checkpoint_meta(self, pos: Position) -> dict:
        """JSON metadata of a checkpoint at ``pos``."""
        return {"epoch": pos.epoch, "step_in_epoch": pos.step, "global_step": pos.global_step}

    def load(self, ck: Checkpoint) -> Position:
        """Restore model and optimizer from ``ck``; returns its position."""
        self.model.load_state_dict(ck.model)
        self.optimizer.load_state_dict(ck.optimizer)
        return Position(ck.meta["epoch"], ck.meta["step_in_epoch"], ck.meta["global_step"])

    def finish(self, run: Path, stopped: bool, global_step: int) -> tuple[Any, Path]:
        """Write the result weights (rank 0); returns ``(result, path of the weights)``."""
        raise NotImplementedError


def train(cfg: Any, method: type[Method], resume: bool = False, progress: bool = True) -> Any:
    """Run ``method`` as ``cfg`` says in ``cfg.out`` (continuing its checkpoint with ``resume``).

    ``cfg`` is a :class:`~equinv.train.config.JsonConfig` with ``validate()``, ``out``, ``epochs``,
    ``log_every`` and optionally ``ckpt_every``, ``save_every``, ``max_minutes``, ``device``.
    """
    t0 = time.perf_counter()
    cfg.validate()
    device = _device(cfg, method.distributed)
    run = RunDir(cfg.out)
    try:
        _claim(run, resume, device)
        return Engine(cfg, method(cfg, device, progress), run, device, progress, t0).run(resume)
    except RuntimeError as e:
        failure = D.collective_failure(e)
        if failure is None:
            raise
        raise failure from None
    finally:
        run.release()


def _device(cfg: Any, distributed: bool) -> torch.device:
    if not distributed:
        if D.launched_world_size() > 1:
            raise InputError(f"this trainer runs in one process ({type(cfg).__name__}); start it without torchrun")
        return torch.device(cfg.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    own = D.setup()
    return torch.device(cfg.device) if cfg.device else own


def _claim(run: RunDir, resume: bool, device: torch.device) -> None:
    """Rank 0 claims the directory; every rank stops when it could not."""
    err = None
    if D.is_main():
        try:
            run.claim(resume)
        except InputError as e:
            err = e
    if D.any_rank(err is not None, device):
        raise err or InputError("rank 0 could not claim the run directory", run.path)


class Engine:
    """Runs one :class:`Method` in a claimed run directory (see the module docstring)."""

    def __init__(self, cfg: Any, method: Method, run: RunDir, device: torch.device, progress: bool, t0: float):
        self.cfg, self.method, self.rundir, self.device = cfg, method, run, device
        self.main = D.is_main()
        self.progress = progress and self.main
        self.epochs, self.log_every = cfg.epochs, cfg.log_every
        self.ckpt_every = getattr(cfg, "ckpt_every", None)
        self.save_every = getattr(cfg, "save_every", None)
        minutes = getattr(cfg, "max_minutes", None)
        self.budget = None if minutes is None else minutes * 60.0
        self.max_steps = getattr(cfg, "max_steps", None)  # stop (resumably) once this many steps are done in all
        self.t0 = t0
        self.guard = FiniteGuard(device)
        self.global_step = 0
        self.kill_at = int(os.environ.get("EQUINV_TEST_KILL_AT_STEP", "0"))
        self.nan_at = int(os.environ.get("EQUINV_TEST_NAN_AT_STEP", "0"))

    def run(self, resume: bool) -> Any:
        """Train to the last epoch (or the budget) and write the result; returns the method's result."""
        pos = self._start(resume)
        if self.main:
            self.cfg.save(self.rundir.config)  # only once the data, the options and the position are sound
        at = (pos.global_step, pos.epoch) if resume else None
        self.log = RunLog(self.rundir.path, self.method.name, self.main, at)
        self.bar = tqdm(total=self.method.steps_per_epoch * self.epochs, initial=pos.global_step,
                        desc=self.method.name, unit="step", disable=not self.progress, dynamic_ncols=True)
        self.t_last, self.seen = time.perf_counter(), 0
        try:
            stopped = self._loop(pos)
            self.bar.close()
            return self._finish(stopped)
        finally:
            self.bar.close()
            self.log.close()

    def _start(self, resume: bool) -> Position:
        pos = Position(1, 0, 0)
        if resume and self.rundir.last.is_file():
            pos = self.method.load(Checkpoint(self.rundir.last, device="cpu"))
            msg = f"resuming {self.rundir.path} at epoch {pos.epoch}, step {pos.step} (global step {pos.global_step})"
        else:
            msg = f"resuming {self.rundir.path}: no checkpoint yet, starting from the beginning"
        started = pos.epoch - 1 + (pos.step > 0)
        if self.epochs < started:
            raise InputError(f"--epochs {self.epochs} is fewer than the {started} epochs this run has started; "
                             f"give --epochs {started} or more", self.rundir.path)
        if resume and self.main:
            print(msg, flush=True)
        return pos

    def _loop(self, pos: Position) -> bool:
        """Train from ``pos``; True when the wall-clock budget stopped the run early."""
        m, start = self.method, pos.step
        self.global_step = pos.global_step
        for epoch in range(pos.epoch, self.epochs + 1):
            m.set_epoch(epoch)
            done, out_of_time = start, False
            for done, batch in enumerate(m.batches(epoch, start), start + 1):
                loss, stats = m.step(batch, self.global_step)
                self.global_step += 1
                self._after_step(epoch, done, loss, stats)
                out_of_time = self._out_of_time()
                if done < m.steps_per_epoch and (out_of_time or self._checkpoint_due()):
                    self.save(Position(epoch, done, self.global_step))
                if self.kill_at and self.global_step == self.kill_at:
                    os.kill(os.getpid(), signal.SIGKILL)
                if out_of_time:
                    break
            if out_of_time and done < m.steps_per_epoch:
                return True
            start = 0
            self._end_epoch(epoch)
            if out_of_time:
                return True
        return False

    def _after_step(self, epoch: int, done: int, loss: Tensor, stats: dict) -> None:
        if self.nan_at and self.global_step == self.nan_at:
            with torch.no_grad():
                next(iter(self.method.model.parameters())).fill_(math.nan)
            loss = loss * math.nan
        self.guard.observe(loss)
        self.bar.update()
        self.seen += self.method.images_per_step or 0
        last_in_epoch = done == self.method.steps_per_epoch
        if self.global_step % self.log_every == 0 or (self.method.log_epoch_end and last_in_epoch):
            self._stop_if_diverged(weights=False)  # one sync, where the log line reads the loss anyway
            if self.main:
                self._log(epoch, loss, stats)

    def _log(self, epoch: int, loss: Tensor, stats: dict) -> None:
        m = self.method
        row = {"step": self.global_step, "epoch": epoch, "loss": loss.item(), "lr": m.optimizer.param_groups[0]["lr"]}
        if m.images_per_step:
            now = time.perf_counter()
            row["img_per_s"] = self.seen / max(now - self.t_last, 1e-9)
            self.t_last, self.seen = now, 0
        row.update(m.log_extra(stats))
        self.log.step(row)
        self.bar.set_postfix(loss=f"{row['loss']:.3f}", epoch=epoch)

    def _out_of_time(self) -> bool:
        if self.max_steps is not None and self.global_step >= self.max_steps:
            return True  # the same step on every rank
        # every rank must stop at the same step: rank 0's clock decides
        return self.budget is not None and D.agree(time.perf_counter() - self.t0 >= self.budget, self.device)

    def _checkpoint_due(self) -> bool:
        return bool(self.ckpt_every) and self.global_step % self.ckpt_every == 0

    def _end_epoch(self, epoch: int) -> None:
        self.method.end_epoch(epoch, self)
        pos = Position(epoch + 1, 0, self.global_step)
        self.save(pos)
        if self.save_every and epoch % self.save_every == 0:
            self.save(pos, f"epoch_{epoch:04d}.safetensors")

    def save(self, pos: Position, name: str = "last.safetensors", optimizer: bool = True) -> None:
        """Write checkpoint ``name`` at ``pos`` (rank 0), after checking that loss and weights are finite."""
        self._stop_if_diverged(weights=True)
        if self.main:
            m = self.method
            save_checkpoint(self.rundir.checkpoints / name, m.model.state_dict(),
                            m.optimizer.state_dict() if optimizer else None, meta=m.checkpoint_meta(pos))
        D.barrier()

    def _stop_if_diverged(self, weights: bool) -> None:
        if not self.guard.diverged(self.method.model if weights else None):
            return
        last = self.rundir.last
        kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written"
        raise TrainingError(f"the loss or the weights became non-finite (NaN/inf) by step {self.global_step}; "
                            f"stopped without writing them: {kept} (a lower --lr may help)", self.rundir.path)

    def _finish(self, stopped: bool) -> Any:
        self._stop_if_diverged(weights=True)  # no result weights from non-finite ones
        result, weights = self.method.finish(self.rundir.path, stopped, self.global_step)
        if self.main:
            state = "stopped at the budget (continue with --resume)" if stopped else "done"
            print(f"{state}: {self.global_step} steps; peak memory {peak_memory_mb(self.device):.0f} MB; "
                  f"weights in {weights}", flush=True)
        D.barrier()
        return result

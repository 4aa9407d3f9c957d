"""The epoch loop every evaluation head shares: train an epoch, validate, keep the best epoch's state.

Regression and segmentation heads (frozen or fine-tuned) differ only in what one epoch does and how a
validation score is read; the cosine schedule, the selection of the epoch with the best validation score
(the last epoch without a validation set) and the training log are the same.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class EpochLoop:
    """How to run the epochs of one head.

    Attributes:
        epochs: number of epochs (the cosine horizon).
        run_epoch: trains one epoch; returns the mean training loss.
        lr: the current learning rate (read after the epoch's schedule step when ``step_first``).
        sched_step: advances the learning-rate schedule by one epoch.
        step_first: step the schedule at the start of each epoch (the reference regressor; epoch 1 already runs
            at η(1)) instead of after it.
        validate: the epoch's validation score, or ``None`` without a validation set.
        val_key: the log key of the score; ``higher``: whether higher scores are better.
        snapshot / restore: copy the state worth keeping / put a copy back.
        validate_start: also score the state before training (epoch 0, a candidate like any epoch): a head that
            starts from a meaningful guess (the mean training shape) is never replaced by a worse one.
        log: called with each epoch's log entry.
    """

    epochs: int
    run_epoch: Callable[[], float]
    lr: Callable[[], float]
    sched_step: Callable[[], None]
    snapshot: Callable[[], object]
    restore: Callable[[object], None]
    step_first: bool = True
    validate: Callable[[], float] | None = None
    val_key: str = "val"
    higher: bool = False
    validate_start: bool = False
    log: Callable[[dict], None] | None = None
    history: list[dict] = field(default_factory=list)

    def _step(self) -> None:
        with warnings.catch_warnings():  # stepping before optimizer.step() is deliberate (the reference's order)
            warnings.simplefilter("ignore", UserWarning)
            self.sched_step()

    def run(self) -> dict:
        """Run every epoch; restores the best validated state; returns ``selected_epoch``, ``history``."""
        best, best_state, best_epoch = -math.inf if self.higher else math.inf, None, 0
        if self.validate is not None and self.validate_start:
            best, best_state = self.validate(), copy.deepcopy(self.snapshot())
            self.history.append({"epoch": 0, self.val_key: best})
        for epoch in range(1, self.epochs + 1):
            if self.step_first:
                self._step()
            entry = {"epoch": epoch, "loss": self.run_epoch(), "lr": self.lr()}
            if not self.step_first:
                self._step()
            if self.validate is not None:
                entry[self.val_key] = score = self.validate()
                if (score > best) if self.higher else (score < best):
                    best, best_epoch, best_state = score, epoch, copy.deepcopy(self.snapshot())
            self.history.append(entry)
            if self.log is not None:
                self.log(entry)
        if best_state is not None:
            self.restore(best_state)
        else:
            best_epoch = self.epochs
        return {"selected_epoch": best_epoch, "history": self.history}

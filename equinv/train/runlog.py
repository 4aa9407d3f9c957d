"""A run's log: one JSON line per logged step in ``RUN/log.jsonl`` and the same figures in TensorBoard.

Only rank 0 logs (elsewhere every call is a no-op). A resumed run continues the log from its
checkpoint: lines of steps past the checkpoint (written before a crash, about to be replayed) are
dropped from log.jsonl, and TensorBoard hides events after the checkpoint's step (``purge_step``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from equinv.safefile import tmp_path


def keep_line(row: dict, global_step: int, epoch: int) -> bool:
    """Whether a log line survives a resume at ``global_step`` (1-based ``epoch`` next to run).

    Step lines carry ``step``; lines without one (a finished epoch's validation) carry ``epoch``.
    """
    if "step" in row:
        return row["step"] <= global_step
    return row.get("epoch", 0) < epoch


def truncate_log(path: Path, global_step: int, epoch: int) -> int:
    """Drop the lines of ``path`` past a resume position (and any partial line); returns how many."""
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:  # a line cut short by a kill
            dropped += 1
            continue
        if keep_line(row, global_step, epoch):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        tmp = tmp_path(path)
        tmp.write_text("".join(f"{ln}\n" for ln in kept))
        os.replace(tmp, path)
    return dropped


class RunLog:
    """log.jsonl + TensorBoard of one run under the tag prefix ``prefix`` (``pretrain``, ``dve``, ...)."""

    def __init__(self, run: Path, prefix: str, enabled: bool, resume_at: tuple[int, int] | None = None):
        self.path = run / "log.jsonl"
        self.prefix = prefix
        self.writer = None
        if not enabled:
            return
        purge = None
        if resume_at is not None:
            global_step, epoch = resume_at
            truncate_log(self.path, global_step, epoch)
            purge = global_step + 1  # events at the checkpoint's own step were written before it and stay
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(run / "tb"), purge_step=purge)

    def step(self, row: dict) -> None:
        """A step line: written to log.jsonl, and every figure but step/epoch to TensorBoard."""
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("step", "epoch"):
                self.writer.add_scalar(f"{self.prefix}/{k}", v, row["step"])
        self.line(row)

    def line(self, row: dict) -> None:
        """Append one JSON line to log.jsonl."""
        if self.writer is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row) + "\n")

    def scalar(self, tag: str, value: float, step: int) -> None:
        """One TensorBoard scalar under its full tag."""
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        """Flush and close TensorBoard."""
        if self.writer is not None:
            self.writer.close()

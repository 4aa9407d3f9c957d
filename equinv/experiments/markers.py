"""``OUT/step.json``: what ran for a step, how it ended, and digests of what it wrote.

A marker holds the step name, the command of every attempt (``attempts``: argv, start, end, wall-clock,
exit code, whether it resumed), the overall ``status`` (``running`` while a command runs, then ``ok``
or ``failed``), ``total_wall_s`` over the attempts that made the current outputs (the last fresh start and
the resumptions after it, :func:`current_attempts`), SHA-256 ``digests`` of the step's outputs and, for
each dependency, the digests of that dependency's outputs it was made from (``dep_digests``). A step
whose dependency's outputs changed since is stale and is run again.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from equinv.experiments.plan import RESUME_FILE, Step

MARKER = "step.json"


def marker_path(step: Step) -> Path:
    """Where ``step``'s marker (``step.json``) lives."""
    return Path(step.out) / MARKER


def read_marker(step: Step) -> dict | None:
    """The step's marker, or ``None`` when it has none (or an unreadable one)."""
    p = marker_path(step)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_marker(step: Step, data: dict) -> None:
    """Write the marker atomically (temporary file, then rename)."""
    p = marker_path(step)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1) + "\n")
    os.replace(tmp, p)


def file_digest(path: Path) -> str:
    """SHA-256 of a file's content.

    For ``.safetensors`` the JSON header is hashed with sorted keys: safetensors writes the metadata map in
    a per-process hash order, so the same tensors saved by two processes differ in their bytes.
    """
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        n = int.from_bytes(fh.read(8), "little") if path.suffix == ".safetensors" else -1
        if 0 <= n <= path.stat().st_size - 8:
            try:
                h.update(json.dumps(json.loads(fh.read(n)), sort_keys=True).encode())
            except ValueError:
                fh.seek(0)
        else:  # not a safetensors header: hash the bytes as they are
            fh.seek(0)
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def output_digests(step: Step) -> dict[str, str]:
    """Digests of the step's outputs that exist."""
    out = Path(step.out)
    return {f: file_digest(out / f) for f in step.outputs if (out / f).is_file()}


def outputs_exist(step: Step) -> bool:
    """Whether every output file ``step`` declares exists."""
    return all((Path(step.out) / f).is_file() for f in step.outputs)


def current_attempts(marker: dict | None) -> list[dict]:
    """The attempts since the last one that started afresh (not ``resumed``): those behind the outputs."""
    attempts = (marker or {}).get("attempts", [])
    fresh = [i for i, a in enumerate(attempts) if not a.get("resumed")]
    return attempts[fresh[-1]:] if fresh else attempts


def spent_seconds(marker: dict | None, step: Step) -> float:
    """Wall-clock the attempts behind the current outputs have used so far.

    An attempt that never finished (killed with the runner) is counted up to the last write of its resume
    checkpoint, the last moment its work was saved.
    """
    if not marker:
        return 0.0
    total = 0.0
    ckpt = Path(step.out) / RESUME_FILE
    for a in current_attempts(marker):
        if a.get("wall_s") is not None:
            total += float(a["wall_s"])
        elif ckpt.is_file():
            total += max(0.0, ckpt.stat().st_mtime - float(a["start"]))
    return total


def now() -> float:
    """The wall-clock time, in seconds since the epoch."""
    return time.time()


def stamp(t: float) -> str:
    """A local ISO time stamp of epoch seconds ``t``."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(t))

"""Finished steps kept in the repository: ``experiments/archive/BUDGET/`` mirrors the run root.

A run root (``runs/repro/BUDGET``) is scratch: it is not in git and is lost with the machine. A plan of
many hours is spread over several machines, so each finished step is also copied into the archive —
its marker, its config, training log, report, the figures the results page shows and every output up to
:data:`MAX_BYTES` (the evaluation JSONs, small weights such as projectors and NMF parts) — and :func:`restore`
copies archived steps back into the run root before a run starts. Restored files are byte-identical (same digests), so
the runner sees a fully archived step as done and the results page is rebuilt from committed files alone.

Larger outputs (a backbone's weights) are generated, not committed: such a step comes back with its
marker but without them, so the runner makes it again; the CPU runs are seeded end to end, so the new
weights have the archived digests and the steps made from them stay done.

Only a step whose archived command is the plan's own (same data root, run root and settings) is
restored: an archive made with other settings is ignored, never mixed in.
"""

from __future__ import annotations

import fnmatch
import os
import shutil
from pathlib import Path

from equinv.experiments import markers as M
from equinv.experiments.plan import Step
from equinv.experiments.results import FIGURES

#: Files kept besides the step's declared outputs (top level of the step's directory). Figures (``*.png``) only
#: where the results page shows them (:data:`~equinv.experiments.results.FIGURES`): a step's other report figures
#: come back by rerunning the step, and the archive travels with every checkout (the GPU machine takes at most
#: 64 MiB of working tree).
KEEP = ("step.json", "step.log", "config.json", "log.jsonl", "*.md", "*.json", "*.png", "*.npz")
#: Larger files are not archived: the step's marker is, and a later run makes them again.
MAX_BYTES = 2 << 20


def _rel(step: Step, run_root: str | Path) -> Path:
    return Path(step.out).resolve().relative_to(Path(run_root).resolve())


def _kept(step: Step, name: str) -> bool:
    """Whether a top-level file of ``step`` is worth archiving (besides its declared outputs)."""
    if not any(fnmatch.fnmatch(name, k) for k in KEEP):
        return False
    return not name.endswith(".png") or any(step.name.startswith(prefix) and fnmatch.fnmatch(name, glob)
                                            for prefix, glob, _ in FIGURES)


def step_files(step: Step) -> list[str]:
    """The files of a finished step worth keeping, relative to its directory."""
    out = Path(step.out)
    names = {f for f in step.outputs if (out / f).is_file()}
    if out.is_dir():
        names |= {p.name for p in out.iterdir() if p.is_file() and _kept(step, p.name)}
    return sorted(n for n in names if (out / n).stat().st_size <= MAX_BYTES)


def prune(steps: list[Step], run_root: str | Path, archive: str | Path) -> list[str]:
    """Delete archived figures that an older archiving policy kept and this one does not; their paths."""
    gone = []
    for s in steps:
        d = Path(archive) / _rel(s, run_root)
        if not d.is_dir():
            continue
        for p in sorted(d.glob("*.png")):
            if p.name not in s.outputs and not _kept(s, p.name):
                p.unlink()
                gone.append(str(p))
    return gone


def _copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def archive_step(step: Step, run_root: str | Path, archive: str | Path) -> bool:
    """Copy a finished (``ok``) step into ``archive``; ``False`` when it is not finished."""
    m = M.read_marker(step)
    if not m or m.get("status") != "ok" or not M.outputs_exist(step):
        return False
    files = step_files(step)
    dst = Path(archive) / _rel(step, run_root)
    if dst.exists():
        shutil.rmtree(dst)
    for f in files:
        if f != M.MARKER:
            _copy(Path(step.out) / f, dst / f)
    _copy(Path(step.out) / M.MARKER, dst / M.MARKER)  # last: a marker in the archive means a complete copy
    return True


def archived_marker(step: Step, run_root: str | Path, archive: str | Path) -> dict | None:
    """The step's marker in the archive, or ``None``."""
    return M.read_marker(Step(step.name, [], str(Path(archive) / _rel(step, run_root)), []))


def restore(steps: list[Step], run_root: str | Path, archive: str | Path) -> list[str]:
    """Copy archived steps into the run root where the run root has no finished copy; their names.

    A step is restored only when its archived marker is ``ok`` and records the plan's own command; a
    step the run root already holds as ``ok`` with its outputs is left alone, and a step whose outputs
    were too large to archive is restored only where the run root has no marker of its own (an
    interrupted local attempt keeps its history and checkpoints).
    """
    restored = []
    for s in steps:
        here = M.read_marker(s)
        if here and here.get("status") == "ok" and M.outputs_exist(s):
            continue
        src = Path(archive) / _rel(s, run_root)
        m = archived_marker(s, run_root, archive)
        if not m or m.get("status") != "ok" or m.get("argv") != s.argv:
            continue
        if here and not all((src / f).is_file() for f in s.outputs):
            continue
        for p in sorted(src.rglob("*")):
            if p.is_file() and p.name != M.MARKER:
                _copy(p, Path(s.out) / p.relative_to(src))
        _copy(src / M.MARKER, Path(s.out) / M.MARKER)
        restored.append(s.name)
    return restored


def archive_all(steps: list[Step], run_root: str | Path, archive: str | Path) -> list[str]:
    """Archive every finished step whose archived copy is missing or older; their names."""
    done = []
    for s in steps:
        m = M.read_marker(s)
        if not m or m.get("status") != "ok":
            continue
        old = archived_marker(s, run_root, archive)
        if old and old.get("end") == m.get("end") and old.get("digests") == m.get("digests"):
            continue
        if archive_step(s, run_root, archive):
            done.append(s.name)
    return done

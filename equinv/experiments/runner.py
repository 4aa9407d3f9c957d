"""Run plan steps in order: skip done ones, resume interrupted training, go on past failures.

A step is *done* when its marker says ``ok`` for the plan's current command, its outputs exist and every
dependency's outputs are those it was made from (:mod:`~equinv.experiments.markers`). Otherwise it runs:
with its ``resume_argv`` when a training step left ``checkpoints/last.safetensors`` (an interrupted or
killed MoCo / DVE / projector run continues exactly), else from the start. A stale step (its command or a
dependency changed, or a training step that started but never wrote a checkpoint) runs again; a stale
training step is moved aside to ``OUT.stale-TIME`` and trained afresh (training refuses a directory that
already holds a run). A failed step is recorded and the steps that depend on it are skipped (``blocked``); independent
steps still run.

Steps run as subprocesses (``python -m equinv ...``; a crash or kill cannot take the runner down) or,
with ``in_process=True``, through :func:`equinv.cli.main`. Output goes to ``OUT/step.log``.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from equinv.experiments import markers as M
from equinv.experiments.plan import RESUME_FILE, Step, select_steps

LOG = "step.log"


@dataclass
class RunSummary:
    """What happened to each selected step: ``done`` (skipped), ``ok``, ``failed``, ``blocked``, ``planned``."""

    status: dict[str, str] = field(default_factory=dict)
    expected_min: dict[str, float] = field(default_factory=dict)  # planned steps (dry run): expected minutes

    def count(self, what: str) -> int:
        return sum(1 for v in self.status.values() if v == what)

    @property
    def ok(self) -> bool:
        return not any(v in ("failed", "blocked") for v in self.status.values())


def step_state(step: Step, by_name: dict[str, Step]) -> tuple[str, str]:
    """``(action, reason)``: action is ``done``, ``resume``, ``stale`` or ``run``."""
    m = M.read_marker(step)
    resumable = step.resume_argv is not None and (Path(step.out) / RESUME_FILE).is_file()
    changed = bool(m) and m.get("argv") is not None and list(m["argv"]) != list(step.argv)
    if m and m.get("status") == "ok" and M.outputs_exist(step):
        if changed:
            return "stale", "its command changed since it ran"
        for dep in step.deps:
            dm = M.read_marker(by_name[dep]) if dep in by_name else None
            if dm is None or dm.get("digests") != m.get("dep_digests", {}).get(dep):
                return "stale", f"{dep} changed since this step ran"
        return "done", f"done {M.stamp(m['end'])}" if m.get("end") else "done"
    if resumable and changed:  # resuming would mix two settings (e.g. a schedule for other epochs)
        return "stale", "interrupted, and its command changed since: starts afresh"
    if resumable:
        why = "interrupted" if not m or m.get("status") == "running" else f"{m.get('status')}, outputs missing"
        return "resume", f"{why}; continues from {RESUME_FILE}"
    if step.resume_argv is not None and (Path(step.out) / "config.json").is_file():
        # a training command refuses a directory that already holds a run: this one is moved aside
        return "stale", "started but never checkpointed: starts afresh"
    if m is None:
        return "run", "not run yet"
    if m.get("status") == "running":
        return "run", "interrupted before any checkpoint"
    if m.get("status") == "ok":
        return "run", "outputs missing"
    return "run", f"last attempt {m.get('status')} (exit {m.get('exit_code')})"


def budget_minutes(step: Step, by_name: dict[str, Step]) -> float | None:
    """The step's wall-clock budget: ``minutes``, or the wall-clock step ``minutes_from`` used (at most
    ``minutes``); ``None`` when it cannot be known yet (the other step has not run)."""
    if step.minutes_from:
        dm = M.read_marker(by_name[step.minutes_from]) if step.minutes_from in by_name else None
        if not dm or dm.get("total_wall_s") is None:
            return None
        used = math.ceil(float(dm["total_wall_s"]) / 6.0) / 10.0  # minutes, rounded up to 0.1
        return min(used, step.minutes) if step.minutes else used
    return step.minutes


def expected_minutes(step: Step, by_name: dict[str, Step]) -> float:
    """Minutes the step is expected to take: its wall-clock budget once that is known (a step that takes
    its budget from another step's run), else the plan's throughput estimate."""
    if step.minutes_from:
        budget = budget_minutes(step, by_name)
        if budget is not None:
            return budget
    return step.estimate_min


def fill_minutes(argv: list[str], minutes: float | None, placeholder: str) -> list[str]:
    """Replace ``{minutes}`` in ``argv`` (by ``placeholder`` text when the budget is unknown)."""
    text = placeholder if minutes is None else f"{minutes:g}"
    return [a.replace("{minutes}", text) for a in argv]


def _run_subprocess(argv: list[str], log: Path) -> int:
    with open(log, "a") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "equinv", *argv], stdout=fh, stderr=subprocess.STDOUT)
        try:
            return proc.wait()
        except BaseException:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
            raise


def _run_in_process(argv: list[str], log: Path) -> int:
    from equinv.cli import main

    with open(log, "a") as fh, contextlib.redirect_stdout(fh), contextlib.redirect_stderr(fh):
        try:
            return int(main(argv) or 0)
        except SystemExit as e:  # argparse errors
            return int(e.code) if isinstance(e.code, int) else 1
        except Exception:
            traceback.print_exc(file=fh)
            return 1


def execute(step: Step, argv: list[str], resumed: bool, by_name: dict[str, Step], in_process: bool = False) -> int:
    """Run one command of ``step`` and record it in its marker; returns the exit status."""
    out = Path(step.out)
    out.mkdir(parents=True, exist_ok=True)
    m = M.read_marker(step) or {"name": step.name, "attempts": []}
    start = M.now()
    attempt = {"argv": argv, "command": step.command(argv), "start": start, "started": M.stamp(start),
               "resumed": resumed, "end": None, "wall_s": None, "exit_code": None}
    m["attempts"] = [*m.get("attempts", []), attempt]
    m.update(name=step.name, argv=step.argv, command=step.command(), status="running", start=start, end=None,
             table=step.table, label=step.label)
    M.write_marker(step, m)
    with open(out / LOG, "a") as fh:
        fh.write(f"\n=== {M.stamp(start)} {step.command(argv)}\n")
    t0 = time.perf_counter()
    rc = (_run_in_process if in_process else _run_subprocess)(argv, out / LOG)
    wall = time.perf_counter() - t0
    end = M.now()
    attempt.update(end=end, ended=M.stamp(end), wall_s=wall, exit_code=rc)
    ok = rc == 0 and M.outputs_exist(step)
    m.update(status="ok" if ok else "failed", exit_code=rc, end=end, wall_s=wall,
             total_wall_s=sum(float(a["wall_s"] or 0.0) for a in M.current_attempts(m)),
             digests=M.output_digests(step) if ok else {},
             dep_digests={d: (M.read_marker(by_name[d]) or {}).get("digests") for d in step.deps if d in by_name})
    if rc == 0 and not ok:
        m["error"] = f"exit 0 but outputs missing: {[f for f in step.outputs if not (out / f).is_file()]}"
    M.write_marker(step, m)
    return rc


def _move_aside(step: Step) -> None:
    out = Path(step.out)
    if out.exists():
        out.rename(out.with_name(f"{out.name}.stale-{time.strftime('%Y%m%d-%H%M%S')}"))


def run_plan(steps: list[Step], only: list[str] | None = None, dry_run: bool = False, in_process: bool = False,
             echo: Callable[[str], None] = print, on_ok: Callable[[Step], None] | None = None) -> RunSummary:
    """Run (or with ``dry_run`` list) the selected steps in plan order; returns what happened to each.

    ``on_ok`` is called with each step that has just finished ``ok`` (the archive keeps it).
    """
    by_name = {s.name: s for s in steps}
    summary = RunSummary()
    for step in select_steps(steps, only):
        action, reason = step_state(step, by_name)
        if action == "done":
            summary.status[step.name] = "done"
            echo(f"[done]    {step.name}: {reason}")
            continue
        waiting = [d for d in step.deps if summary.status.get(d) in ("failed", "blocked", "planned")
                   or (d not in summary.status and d in by_name and step_state(by_name[d], by_name)[0] != "done")]
        argv = step.resume_argv if action == "resume" else step.argv
        minutes = budget_minutes(step, by_name)
        if minutes is not None and action == "resume":
            minutes = max(0.1, round(minutes - M.spent_seconds(M.read_marker(step), step) / 60.0, 1))
        shown = fill_minutes(argv, minutes, f"<wall-clock of {step.minutes_from}>")
        if dry_run:
            summary.status[step.name] = "planned"
            summary.expected_min[step.name] = expected_minutes(step, by_name)
            after = f" (after {', '.join(waiting)})" if waiting else ""
            echo(f"[{action}]{' ' * max(1, 8 - len(action))}{step.name}: {reason}{after}, "
                 f"~{summary.expected_min[step.name]:.0f} min\n    {step.command(shown)}")
            continue
        if waiting:
            summary.status[step.name] = "blocked"
            echo(f"[blocked] {step.name}: waiting for {', '.join(waiting)}")
            continue
        if action == "stale" and step.resume_argv is not None:
            _move_aside(step)
        echo(f"[{action}]{' ' * max(1, 8 - len(action))}{step.name}: {reason}\n    {step.command(shown)}")
        rc = execute(step, shown, action == "resume", by_name, in_process)
        m = M.read_marker(step) or {}
        summary.status[step.name] = "ok" if m.get("status") == "ok" else "failed"
        if on_ok is not None and summary.status[step.name] == "ok":
            on_ok(step)
        echo(f"          -> {summary.status[step.name]} (exit {rc}, {m.get('wall_s', 0.0) / 60:.1f} min; "
             f"log {Path(step.out) / LOG})")
    return summary

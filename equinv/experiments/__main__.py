"""``python -m equinv.experiments reproduce|results``: run the paper's experiments, write the results page."""

from __future__ import annotations

import argparse
import sys

from equinv.errors import InputError


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--budget", default="cpu",
                   help="cpu (default), gpu, smoke, or a budget .json (experiments/configs/*.json)")
    p.add_argument("--data-root", default="../shared/data", help="folder that {root} in the data specs stands for")
    p.add_argument("--data-config", action="append", default=None, metavar="JSON",
                   help="data overlay replacing dataset roles (experiments/configs/paper_datasets/*.json); "
                   "repeatable, later ones win")
    p.add_argument("--out", default=None, help="run root of all steps (default runs/repro/BUDGET)")
    p.add_argument("--results", default=None,
                   help="results page (default docs/results.md; for the smoke budget OUT/results.md)")
    p.add_argument("--archive", default=None, metavar="DIR",
                   help="where finished steps are kept in the repository and restored from (default "
                   "experiments/archive/BUDGET for the cpu and gpu budgets; none for smoke)")
    p.add_argument("--no-archive", action="store_true", help="neither restore from nor write to the archive")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m equinv.experiments`` parser (reproduce, results)."""
    p = argparse.ArgumentParser(prog="python -m equinv.experiments",
                                description="Reproduce the paper's experiments as one resumable plan of equinv "
                                "commands, then write the results page.")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    r = sub.add_parser("reproduce", help="run every step not yet done (resuming interrupted ones), then the page",
                       description="Runs the plan's steps in order. A step is skipped when its step.json marker says "
                       "ok and its outputs exist; an interrupted training step continues with --resume; a failed "
                       "step is recorded and the steps that do not depend on it still run.")
    _common(r)
    r.add_argument("--only", default=None, help="comma-separated step names or patterns (fnmatch), e.g. faces_*")
    r.add_argument("--dry-run", action="store_true", help="print each step's state and command; run nothing")
    r.add_argument("--in-process", action="store_true",
                   help="run steps through equinv.cli.main in this process instead of subprocesses")
    s = sub.add_parser("results", help="(re)write the results page from what has run so far")
    _common(s)
    return p


def _paths(args: argparse.Namespace, budget: str) -> tuple[str, str, str | None]:
    out = args.out or f"runs/repro/{budget}"
    results = args.results or (f"{out}/results.md" if budget == "smoke" else "docs/results.md")
    archive = None if args.no_archive else args.archive or (
        None if budget == "smoke" or budget.endswith(".json") else f"experiments/archive/{budget}")
    return out, results, archive


def main(argv: list[str] | None = None) -> int:
    """Run the reproduction plan or rebuild its results page; returns the exit status."""
    from equinv.experiments import archive as A
    from equinv.experiments.config import load_config
    from equinv.experiments.plan import build_plan
    from equinv.experiments.results import write_results
    from equinv.experiments.runner import run_plan

    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args.budget, args.data_root, args.data_config)
    except InputError as e:
        print(f"equinv.experiments: error: {e}", file=sys.stderr)
        return 2
    out, results, archive = _paths(args, cfg["budget"])
    cfg["run_root"] = out
    steps = build_plan(cfg, out)
    if archive and getattr(args, "dry_run", False):
        print(f"(a real run first restores the finished steps kept in {archive})")
    elif archive:
        restored = A.restore(steps, out, archive)
        if restored:
            print(f"restored {len(restored)} finished steps from {archive}: {', '.join(restored)}")
        kept = A.archive_all(steps, out, archive)  # steps finished by a run without the archive
        if kept:
            print(f"archived {len(kept)} finished steps into {archive}: {', '.join(kept)}")
        if gone := A.prune(steps, out, archive):
            print(f"pruned {len(gone)} archived figures the results page does not show from {archive}")
    if args.command == "results":
        print(f"results page: {write_results(cfg, steps, results)}")
        return 0
    only = [x.strip() for x in args.only.split(",") if x.strip()] if args.only else None
    try:
        summary = run_plan(steps, only=only, dry_run=args.dry_run, in_process=args.in_process,
                           on_ok=(lambda s: A.archive_step(s, out, archive)) if archive else None)
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130
    if args.dry_run:
        todo = sum(summary.expected_min.values())
        print(f"{len(summary.expected_min)} of {len(summary.status)} selected steps to run, estimate "
              f"{todo:.0f} min ({todo / 60:.1f} h)")
        return 0
    page = write_results(cfg, steps, results)
    print(f"{summary.count('ok')} ran, {summary.count('done')} already done, {summary.count('failed')} failed, "
          f"{summary.count('blocked')} blocked; results page: {page}")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

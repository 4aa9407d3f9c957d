"""``equinv report RUN_DIR [RUN_DIR ...]``: a run's own report page, or several runs side by side."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.outputs import check_dir

#: Where the side-by-side page goes without --out.
DEFAULT_OUT = "report_compare"


def run(args: argparse.Namespace) -> int:
    """Write one run's page, or several runs side by side."""
    from equinv.report.compare import compare_runs
    from equinv.report.page import write_run_page

    names = [n.strip() for n in args.names.split(",")] if args.names else None
    single = len(args.run_dirs) == 1 and args.out is None
    check_dir(args.run_dirs[0] if single else args.out or DEFAULT_OUT, "RUN_DIR" if single else "--out")
    if single:
        paths = write_run_page(args.run_dirs[0])
    else:
        paths = compare_runs(args.run_dirs, Path(args.out or DEFAULT_OUT), names)
    pages = [p for p in paths if p.suffix in (".md", ".html")]
    for p in pages:
        print(f"wrote {p}")
    if len(paths) > len(pages):
        print(f"wrote {len(paths) - len(pages)} figure(s) next to them")
    return 0


def register(sub) -> None:
    """Add ``equinv report``."""
    p = sub.add_parser(
        "report",
        help="report page of an evaluation run, or several runs side by side (Markdown + HTML)",
        description="With one RUN_DIR (an `equinv eval ...` output directory) and no --out: (re)write "
        "RUN_DIR/report.md and RUN_DIR/report.html with the metric tables, figures (predicted vs true landmarks, "
        "curves vs number of annotations, mask overlays), config, datasets and software versions. With several "
        "RUN_DIRs (or --out): write OUT/compare.md and OUT/compare.html, one row per run, and combined "
        "limited-annotation curves when the runs share numbers of annotations.",
        epilog="Examples: equinv report runs/eval_mafl ; equinv report runs/eval_mafl_r18 runs/eval_mafl_r50 "
        "--names r18,r50 --out runs/compare_mafl",
    )
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="evaluation output directory")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"directory of the side-by-side page (default with several runs: ./{DEFAULT_OUT})")
    p.add_argument("--names", default=None, help="comma-separated row names, one per RUN_DIR (default: dir names)")
    p.set_defaults(fn=run)

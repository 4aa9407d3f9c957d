"""``equinv demo``: run the main job on the built-in synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import positive_int


def run(args: argparse.Namespace) -> int:
    """Generate, preprocess, cache and augment synthetic faces; write figures."""
    from equinv.demo import run_demo

    run_demo(Path(args.out), n=args.n, device=args.device, seed=args.seed)
    return 0


def register(sub) -> None:
    """Add ``equinv demo``."""
    d = sub.add_parser(
        "demo",
        help="run the main job on the built-in synthetic data",
        description="Generate the built-in synthetic dataset, preprocess and cache it, augment a batch "
        "on the device with landmarks (crop, colour, JPEG, TPS, flip) and write figures.",
    )
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--n", type=positive_int, default=256, help="number of synthetic images (default 256)")
    d.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=run)

"""``equinv demo``: run the main job on the built-in synthetic data."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import add_device_arg, nonneg_int, positive_int
from equinv.outputs import check_dir


def run(args: argparse.Namespace) -> int:
    """Generate, preprocess, cache and augment synthetic faces; write figures."""
    from equinv.demo import run_demo

    check_dir(args.out)
    run_demo(Path(args.out), n=args.n, device=args.device, seed=args.seed, epochs=args.epochs,
             labelled=args.labelled, steps=args.steps)
    return 0


def register(sub) -> None:
    """Add ``equinv demo``."""
    d = sub.add_parser(
        "demo",
        help="run the main job on the built-in synthetic data",
        description="The main job on built-in synthetic faces: generate, preprocess and cache them, augment a batch "
        "on the device with landmarks (crop, colour, JPEG, TPS, flip); pretrain a ResNet18 with MoCo for a few "
        "epochs; fit a landmark model on a few labelled faces with the pretrained and with the random-init backbone; "
        "predict held-out faces and print the IOD error of both beside the mean training shape's; write figures "
        "(augmented views, predictions, a landmark transfer), the model and summary.json.",
    )
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--n", type=positive_int, default=256, help="number of synthetic images (default 256)")
    add_device_arg(d)
    d.add_argument("--epochs", type=positive_int, default=4, help="MoCo epochs (default 4)")
    d.add_argument("--labelled", type=positive_int, default=20, help="labelled faces to fit on (default 20)")
    d.add_argument("--steps", type=positive_int, default=200, help="fit steps (default 200)")
    d.add_argument("--seed", type=nonneg_int, default=0)
    d.set_defaults(fn=run)

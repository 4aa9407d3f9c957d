"""``equinv fit``: train a landmark model on labelled images and save it (model.safetensors + model.json)."""

from __future__ import annotations

import argparse

from equinv.commands.options import (
    SPEC_HELP,
    add_feature_args,
    add_run_args,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from equinv.errors import InputError
from equinv.outputs import check_dir


def _heatmap_init(text: str) -> float | str:
    from equinv.evaluate.regressor_fit import resolve_heatmap_init

    try:
        return resolve_heatmap_init(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    """Fit, save, and print a one-line summary (validation numbers beside the mean shape's)."""
    from equinv.commands.options import feature_spec
    from equinv.landmarks.fit import FitConfig, fit, summary

    check_dir(args.out)
    if args.cache_dir:
        check_dir(args.cache_dir, "--cache-dir")
    cfg = FitConfig(train=args.train, val=args.val, features=feature_spec(args), steps=args.steps, lr=args.lr,
                    wd=args.wd, batch_size=args.batch_size, n_heatmaps=args.n_heatmaps,
                    softargmax_mul=args.softargmax_mul, heatmap_init_std=args.heatmap_init_std,
                    input_scale=args.input_scale, anchor=not args.no_anchor, tps_copies=args.tps_copies,
                    seed=args.seed, limit=args.limit, head=args.head,
                    device=args.device, cache_dir=args.cache_dir)
    model = fit(cfg, args.out, force=args.force, progress=not args.quiet)
    print(f"{summary(model)} -> {args.out}")
    return 0


def register(sub) -> None:
    """Add ``equinv fit``."""
    p = sub.add_parser(
        "fit",
        help="train a landmark model on labelled images and save it (then: equinv predict MODEL_DIR ...)",
        description="Fit a landmark head on frozen features of any source, from a labelled dataset spec: the "
        "heat-map regressor (the same training code as `equinv eval regress`) or, for few labels, landmark "
        "transfer (--head; default auto), and save a self-contained model directory: "
        "model.safetensors (the trunk, projector/parts/DVE net if any, and the head) and model.json (feature "
        "source, input size and normalisation, the framing of the training data, landmark names and left/right "
        "pairs, training data and settings, validation metrics beside the mean training shape's, versions). "
        "Defaults are chosen for short CPU runs and few labels (docs/landmarks.md): a softmax multiplier of 3, "
        "fan-in heat-map init, 16 heat-maps per landmark on a 32² grid, a regressor that starts from the mean "
        "training shape (kept when no step count validates better on --val), 600 steps.",
        epilog="Example: equinv fit --backbone runs/celeba_r18 --train "
        "'mtfl:../shared/data/mtfl?holdout=1000&limit=500' "
        "--val 'mtfl:../shared/data/mtfl?holdout=1000&part=val&limit=300' --out models/faces",
    )
    add_feature_args(p, grid="32; a single layer or DVE map: its native side", readout="linear")
    p.add_argument("--train", required=True, metavar="SPEC", help="labelled training images: " + SPEC_HELP)
    p.add_argument("--val", default=None, metavar="SPEC", help="labelled validation images: the regressor's best "
                   "step count and (with --head auto) the better head are kept, and the model's validation metrics "
                   "recorded")
    p.add_argument("--limit", type=positive_int, default=None, help="use the first N training images")
    p.add_argument("--head", choices=("auto", "regressor", "transfer"), default="auto",
                   help="what predicts the landmarks: 'regressor' (heat-map regressor trained for --steps), 'transfer' "
                   "(no training: each labelled example's landmark descriptors matched in a window around the mean "
                   "shape, window and temperature chosen by leave-one-out; for few labels), or 'auto' (default: with "
                   "--val both, the better kept; without, transfer up to 64 labelled images, else the regressor)")
    p.add_argument("--steps", type=positive_int, default=600, help="optimiser steps (default 600)")
    p.add_argument("--lr", type=positive_float, default=3e-2, help="Adam learning rate (default 3e-2)")
    p.add_argument("--wd", type=nonneg_float, default=5e-4, help="weight decay (default 5e-4)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--n-heatmaps", type=positive_int, default=16,
                   help="heat-maps per landmark (default 16; eval regress: 50)")
    p.add_argument("--softargmax-mul", type=positive_float, default=3.0,
                   help="softmax multiplier (default 3)")
    p.add_argument("--heatmap-init-std", type=_heatmap_init, default="fan-in", metavar="STD|fan-in",
                   help="std of the heat-map weights' init (default fan-in)")
    p.add_argument("--input-scale", choices=("auto", "none", "std"), default="auto",
                   help="per-channel 1/std input scaling (default auto: for projected / NMF sources)")
    p.add_argument("--no-anchor", action="store_true",
                   help="start from a random linear map, as the reference, not from the mean training shape")
    p.add_argument("--tps-copies", type=nonneg_int, default=0,
                   help="train on N fixed TPS-warped copies of every labelled image (the reference's 'paper' warp; "
                   "features of the copies are extracted once; default 0: the images as given)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the regressor, of the TPS copies (and of a "
                   "random trunk)")
    p.add_argument("--cache-dir", default=None, help="keep frozen features as .npy memmaps here (reused)")
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--force", action="store_true", help="replace a model already in --out")
    add_run_args(p)
    p.set_defaults(fn=run)

"""``equinv match``: transfer a reference image's landmarks to target images by nearest neighbour.

Example::

    equinv match --backbone runs/celeba_r18 --arch resnet18 \\
        --reference "celeba:../shared/data/celeba?split=mafl_test#3" \\
        --targets "celeba:../shared/data/celeba?split=mafl_test" --max-targets 16 --out runs/match

writes ``OUT/matches.json`` (per target: predicted landmarks in the 96 frame and in the target's own
input-image pixels; errors where the targets are labelled) and ``OUT/matches.png``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import add_feature_args, add_run_args, deprecated, feature_spec, nonneg_int, positive_int
from equinv.outputs import check_dir


def run(args: argparse.Namespace) -> int:
    """Transfer the landmarks and print where the results went (and the mean error when labelled)."""
    from equinv.evaluate.landmark_transfer import TransferConfig, run_transfer

    check_dir(args.out)
    cfg = TransferConfig(reference=args.reference, targets=args.targets, features=feature_spec(args),
                         points=args.points, max_targets=args.max_targets, image_size=args.image_size,
                         whole_norm=args.whole_norm, soft=args.soft, batch=args.batch, n_figure=args.n_figure,
                         cell=args.cell, cols=args.cols, device=args.device, progress=not args.quiet)
    res = run_transfer(cfg, args.out)
    out = Path(args.out)
    line = f"{len(res['targets'])} targets -> {out / 'matches.json'}, {out / 'matches.png'}"
    if "summary" in res:
        sm = res["summary"]
        line += f"; mean error {sm['mean_error_96']:.2f} px (96 frame), {sm['mean_error_dve70']:.2f} (70-px frame)"
    print(line)
    return 0


def register(sub) -> None:
    """Add ``equinv match``."""
    p = sub.add_parser(
        "match",
        help="transfer landmarks of a reference image to targets by nearest neighbour (JSON + PNG)",
        description="Hard nearest neighbour in descriptor space (protocol.md §5a): the reference descriptor at "
        "each landmark (rounded to the grid) is compared by cosine with every target pixel, the argmax is the "
        "prediction (--soft refines it by a local soft-argmax). Descriptors: any feature source at the image "
        "side (96), each layer L2-normalised per pixel (the hypercolumn), or a projector's output (--source "
        "projected), NMF coefficients (--source nmf), a DVE network. Errors are reported when the targets carry "
        "the reference's landmarks. Points are written in the 96-px evaluated view and in each target image's "
        "own pixels (x right, y down, pixel centres at integers).",
        epilog="Example: equinv match --backbone runs/celeba_r18 --reference 'celeba:../shared/data/celeba?"
        "split=mafl_test#0' --targets 'celeba:../shared/data/celeba?split=mafl_test' --max-targets 16 "
        "--out runs/match",
    )
    add_feature_args(p, grid="the image side, 96", readout="output")
    p.add_argument("--reference", required=True, metavar="KIND:PATH[#INDEX]",
                   help="dataset of the reference image, '#N' picks image N (default 0)")
    p.add_argument("--targets", required=True, metavar="KIND:PATH", help="dataset of the target images")
    p.add_argument("--points", default=None, metavar="X,Y;X,Y",
                   help="reference points in the reference's input-image pixels (instead of its landmarks)")
    p.add_argument("--max-targets", type=positive_int, default=32, help="first N targets (default 32)")
    p.add_argument("--image-size", type=positive_int, default=96, help="evaluated image side (default 96)")
    deprecated(p, "--size", "--image-size", "image_size", type=positive_int)
    p.add_argument("--whole-norm", action="store_true",
                   help="normalise the hypercolumn as a whole instead of per layer")
    p.add_argument("--soft", action="store_true", help="soft-argmax refinement around the hard argmax")
    p.add_argument("--batch", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--n-figure", type=positive_int, default=15, help="targets shown in matches.png (default 15)")
    p.add_argument("--cell", type=positive_int, default=128, help="figure cell side in px (default 128)")
    p.add_argument("--cols", type=positive_int, default=4, help="figure columns (default 4)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of a random trunk (default 0)")
    p.add_argument("--out", default="runs/match", help="output folder (default runs/match)")
    add_run_args(p)
    p.set_defaults(fn=run)

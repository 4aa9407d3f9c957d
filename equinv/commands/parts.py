"""``equinv parts``: NMF parts (paper Fig. 5) or PCA maps (appendix A.1, Fig. 6) of a frozen hypercolumn.

Example::

    equinv parts --backbone runs/celeba_r18 --arch resnet18 \\
        --data "celeba:../shared/data/celeba?split=mafl_test" --method nmf --dim 8 --out runs/parts

writes ``OUT/parts.safetensors`` (+ ``parts.json``), ``OUT/parts.png`` (NMF: argmax part per pixel over
each image) or ``OUT/pca.png`` (first 3 components as RGB and each in grey), and ``OUT/summary.json``.
"""

from __future__ import annotations

import argparse

from equinv.commands.options import add_feature_args, add_run_args, deprecated, feature_spec, nonneg_int, positive_int
from equinv.outputs import check_dir


def run(args: argparse.Namespace) -> int:
    """Fit and draw the parts; print what was written."""
    from equinv.evaluate.parts import PartsConfig, run_parts

    check_dir(args.out)
    cfg = PartsConfig(data=args.data, features=feature_spec(args), method=args.method, dim=args.dim,
                      uncentered=args.uncentered, whole_norm=args.whole_norm, image_size=args.image_size,
                      max_images=args.max_images, max_pixels=args.max_pixels, n_figure=args.n_figure,
                      cell=args.cell, cols=args.cols, seed=args.seed, device=args.device, progress=not args.quiet)
    info = run_parts(cfg, args.out)
    print(f"{info['method']} d={info['dim']} on {info['n_pixels']} pixels of {info['n_images']} images -> "
          f"{info['model']}, {info['figure']}")
    return 0


def register(sub) -> None:
    """Add ``equinv parts``."""
    p = sub.add_parser(
        "parts",
        help="fit NMF parts or PCA maps of hypercolumns and draw them (paper Fig. 5, Fig. 6)",
        description="Samples hypercolumn pixels (per-layer L2-normalised, --grid x --grid per image, at most "
        "--max-pixels in all) from --max-images images, fits scikit-learn NMF with --dim components or PCA "
        "(centred as the code by default; --uncentered as the paper), saves the model as safetensors + JSON "
        "and draws the maps with fixed colours per component.",
        epilog="Example: equinv parts --backbone runs/celeba_r18 --data 'celeba:../shared/data/celeba?"
        "split=mafl_test' --method nmf --dim 8 --out runs/parts",
    )
    add_feature_args(p, sources=("hypercolumn",), dve=False)
    p.add_argument("--data", required=True, metavar="KIND:PATH", help="images to fit on (and to draw)")
    p.add_argument("--method", choices=["nmf", "pca"], default="nmf", help="nmf (default) or pca")
    p.add_argument("--dim", type=positive_int, default=8, help="number of components (default 8)")
    p.add_argument("--uncentered", action="store_true", help="PCA without centring (the paper's wording)")
    p.add_argument("--whole-norm", action="store_true",
                   help="normalise each hypercolumn as a whole instead of per layer before fitting")
    p.add_argument("--image-size", type=positive_int, default=96, help="evaluated image side (default 96)")
    deprecated(p, "--size", "--image-size", "image_size", type=positive_int)
    p.add_argument("--max-images", type=positive_int, default=64, help="seeded subset of images to fit on (default 64)")
    p.add_argument("--max-pixels", type=positive_int, default=20000, help="pixels sampled for fitting (default 20000)")
    p.add_argument("--n-figure", type=positive_int, default=8, help="images in the figure (default 8)")
    p.add_argument("--cell", type=positive_int, default=96, help="figure cell side (default 96)")
    p.add_argument("--cols", type=positive_int, default=4, help="image/part pairs per row (default 4)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the sampling and of a random trunk (default 0)")
    p.add_argument("--out", default="runs/parts", help="output folder (default runs/parts)")
    add_run_args(p)
    p.set_defaults(fn=run)

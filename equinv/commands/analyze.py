"""``equinv parts``: NMF parts (paper Fig. 5) or PCA maps (appendix A.1, Fig. 6) of a frozen hypercolumn.

Example::

    equinv parts --backbone runs/celeba_r18 --arch resnet18 \
        --data "celeba:../shared/data/celeba?split=mafl_test" --method nmf --dim 8 --out runs/parts

writes ``OUT/parts.safetensors`` (+ ``parts.json``), ``OUT/parts.png`` (NMF: argmax part per pixel over
each image) or ``OUT/pca.png`` (first 3 components as RGB and each in grey).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from equinv.commands.match import add_backbone_args, build_hypercolumn, open_dataset, pick_device
from equinv.errors import InputError


def run_parts(args: argparse.Namespace) -> dict:
    from equinv.evaluate.descriptors import stats_for_kind
    from equinv.evaluate.parts import fit_parts, part_coefficients, part_labels, sample_pixels
    from equinv.viz.maps import parts_figure, pca_figure

    if args.dim < 1:
        raise InputError(f"--dim must be positive, got {args.dim}")
    out = Path(args.out)
    dev = pick_device(args.device)
    ds = open_dataset(args.data, args.size, progress=not args.quiet)
    n = len(ds) if args.max_images is None else min(len(ds), args.max_images)
    rng = np.random.default_rng(args.seed)
    idx = np.sort(rng.choice(len(ds), size=n, replace=False)) if n < len(ds) else np.arange(n)
    batch = ds.__getitems__(idx.tolist())
    stats = args.stats or stats_for_kind(ds.index.kind)
    hc = build_hypercolumn(args.backbone, args.arch, args.layer, args.grid, args.seed, dev)
    layerwise = not args.whole_norm
    x = sample_pixels(hc, batch["image"], pre=ds.pre, stats=stats, size=args.grid, layerwise=layerwise,
                      max_pixels=args.max_pixels, seed=args.seed, device=dev)
    meta = {"arch": args.arch, "backbone": args.backbone or "random", "layer": args.layer, "taps": list(hc.taps),
            "channels": list(hc.channels), "grid": args.grid, "stats": stats, "data": args.data,
            "n_images": int(n), "n_pixels": int(x.shape[0]), "seed": args.seed}
    model = fit_parts(x, args.method, args.dim, centered=not args.uncentered, seed=args.seed,
                      layerwise=layerwise, meta=meta)
    path = model.save(out / "parts.safetensors")
    nf = min(n, args.n_figure)
    fig_imgs = batch["image"][:nf]
    coeffs = part_coefficients(model.to(dev), hc, fig_imgs, pre=ds.pre, stats=stats, size=args.grid, device=dev)
    m, s = ds.pre.margin, ds.pre.size
    views = fig_imgs[:, :, m : m + s, m : m + s]
    if args.method == "pca":
        fig = pca_figure(views, model.scaled(coeffs)[:, :3], out / "pca.png", cell=args.cell)
    else:
        lab = part_labels(coeffs)
        strength = model.scaled(coeffs).amax(1)
        fig = parts_figure(views, lab, out / "parts.png", cell=args.cell, cols=args.cols, strength=strength)
    info = {"model": str(path), "figure": str(fig), **model.settings()}
    (out / "summary.json").write_text(json.dumps(info, indent=1) + "\n")
    return info


def cmd_parts(args: argparse.Namespace) -> int:
    info = run_parts(args)
    print(f"{info['method']} d={info['dim']} on {info['n_pixels']} pixels of {info['n_images']} images -> "
          f"{info['model']}, {info['figure']}")
    return 0


def register(sub) -> None:
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
    add_backbone_args(p)
    p.add_argument("--data", required=True, metavar="KIND:PATH", help="images to fit on (and to draw)")
    p.add_argument("--method", choices=["nmf", "pca"], default="nmf", help="nmf (default) or pca")
    p.add_argument("--dim", type=int, default=8, help="number of components (default 8)")
    p.add_argument("--uncentered", action="store_true", help="PCA without centring (the paper's wording)")
    p.add_argument("--whole-norm", action="store_true",
                   help="normalise each hypercolumn as a whole instead of per layer before fitting")
    p.add_argument("--grid", type=int, default=48, help="hypercolumn grid side (default 48)")
    p.add_argument("--max-images", type=int, default=64, help="seeded subset of images to fit on (default 64)")
    p.add_argument("--max-pixels", type=int, default=20000, help="pixels sampled for fitting (default 20000)")
    p.add_argument("--n-figure", type=int, default=8, help="images in the figure (default 8)")
    p.add_argument("--cell", type=int, default=96, help="figure cell side (default 96)")
    p.add_argument("--cols", type=int, default=4, help="image/part pairs per row (default 4)")
    p.add_argument("--out", default="runs/parts", help="output folder (default runs/parts)")
    p.set_defaults(fn=cmd_parts)

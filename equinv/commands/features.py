"""``equinv features``: export frozen-backbone hypercolumns of a dataset to .npy / .safetensors (streaming)."""

from __future__ import annotations

import argparse

from equinv.commands.options import add_feature_args, add_run_args, deprecated, feature_spec, nonneg_int, positive_int
from equinv.outputs import check_file

#: Stored dtypes (equinv.features.export.DTYPES; kept here so that parsing does not import torch).
DTYPES = ("float16", "float32", "bfloat16")


def run(args: argparse.Namespace) -> int:
    """Export the features and print the files written."""
    from equinv.features.export import export_features

    out = check_file(args.out, suffixes=(".npy", ".safetensors"), force=args.force)
    check_file(out.with_suffix(".json"), force=args.force)  # the sidecar: written with every output
    res = export_features(
        args.data,
        args.out,
        feature_spec(args),
        normalize_features=args.normalize,
        dtype=args.dtype,
        batch=args.batch,
        factorised=args.factorised,
        image_size=args.image_size,
        max_images=args.max_images,
        device=args.device,
        workers=args.workers,
        skip_bad=args.skip_bad,
        progress=not args.quiet,
    )
    info = res.info
    for name, f in info["files"].items():
        print(f"{name:12s} {tuple(f['shape'])} {info['dtype']} -> {res.files[name]}")
    print(f"sidecar      {res.sidecar}  ({info['n_images']} images, taps {','.join(info['taps'])})")
    if info["skipped"]:
        print(f"skipped      {len(info['skipped'])} bad input(s) (listed in the sidecar)")
    if info["nonfinite_values"]:
        print(f"warning: {info['nonfinite_values']} non-finite values after casting to {info['dtype']}; "
              "use --dtype float32")
    return 0


def register(sub) -> None:
    """Add ``equinv features``."""
    p = sub.add_parser(
        "features",
        help="export frozen-backbone hypercolumns of every image of a dataset (.npy / .safetensors, streaming)",
        description="Run a frozen trunk over the final view (96 px) of every image of a dataset and write the "
        "hypercolumn (protocol.md §2: taps deepest first, bilinear, align_corners=False) batch by batch into a "
        "pre-allocated file, so memory holds one batch. .npy: dense (N, C, S, S) via numpy open_memmap, or with "
        "--factorised one FILE.<tap>.npy per tap at native resolution. .safetensors: per-tap native maps "
        "(default; --no-factorised for one dense 'hypercolumn' tensor) plus index, landmarks (final-view pixels) "
        "and visible. A JSON sidecar FILE.json records spec, arch, weights, taps, size, normalisation and the "
        "image order. Inputs use face statistics, or ImageNet statistics for cub/folder/coco.",
        epilog="Example: equinv features --backbone runs/celeba_r18 --arch resnet18 "
        "--data celeba:../shared/data/celeba?split=mafl_test --out feats/mafl_test.safetensors",
    )
    add_feature_args(p, grid="48; 96 for matching", readout="output")
    p.add_argument("--data", required=True, metavar="KIND:PATH",
                   help="dataset as KIND:PATH[?key=value&...]; `equinv data kinds` lists kinds and options")
    p.add_argument("--out", required=True, metavar="FILE", help="FILE.npy or FILE.safetensors")
    deprecated(p, "--size", "--grid", "grid", type=positive_int)
    p.add_argument("--normalize", action="store_true",
                   help="L2-normalise each layer block per pixel (the matching descriptor)")
    p.add_argument("--dtype", choices=list(DTYPES), default="float16", help="stored dtype (default float16)")
    p.add_argument("--batch", type=positive_int, default=32, help="images per forward pass (default 32)")
    p.add_argument("--factorised", action=argparse.BooleanOptionalAction, default=None,
                   help="per-tap native-resolution maps (default: yes for .safetensors, no for .npy)")
    p.add_argument("--image-size", type=positive_int, default=96, help="final view side (default 96)")
    p.add_argument("--max-images", type=positive_int, default=None, help="only the first N images (dataset order)")
    p.add_argument("--seed", type=nonneg_int, default=0, help="seed of the random-init backbone (default 0)")
    p.add_argument("--workers", type=nonneg_int, default=0, help="DataLoader worker processes (default 0)")
    p.add_argument("--skip-bad", action="store_true", help="skip bad inputs instead of stopping")
    p.add_argument("--force", action="store_true", help="replace an existing --out (and its .json sidecar)")
    add_run_args(p)
    p.set_defaults(fn=run)

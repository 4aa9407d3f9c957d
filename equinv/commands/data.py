"""``equinv data check|kinds``: inspect datasets."""

from __future__ import annotations

import argparse

from equinv.commands.options import SPEC_HELP, positive_float, positive_int
from equinv.errors import InputError
from equinv.outputs import IMAGE_SUFFIXES, check_file, write_text


def add_preprocess_args(p: argparse.ArgumentParser) -> None:
    """``--size``, ``--context``, ``--crop``: the protocol preprocessing of a dataset's images."""
    g = p.add_argument_group("preprocessing")
    g.add_argument("--size", type=positive_int, default=96, help="final image side in pixels (default 96)")
    g.add_argument("--context", type=positive_float, default=None,
                   help="canvas side / final side; default: the kind's protocol value (136/96 for faces, 1 for birds)")
    g.add_argument("--crop", choices=["celeba", "whole", "box", "landmarks", "300w"], default=None,
                   help="force one crop rule for all records (default: each dataset's protocol crop)")


def preprocess_from_args(args: argparse.Namespace):
    """The :class:`~equinv.data.preprocess.Preprocess` of :func:`add_preprocess_args`' flags."""
    from equinv.data.preprocess import Preprocess

    try:
        return Preprocess(size=args.size, context=args.context, crop=args.crop)
    except ValueError as e:
        raise InputError(f"bad preprocessing option: {e}") from None


def check(args: argparse.Namespace) -> int:
    """Validate every annotation, decode every image, print counts, write a contact sheet."""
    from equinv.data.check import check_dataset

    sheet = None if args.no_sheet else check_file(args.out, suffixes=IMAGE_SUFFIXES)
    if args.skip_report:
        check_file(args.skip_report, "--skip-report")
    rep = check_dataset(args.spec, sheet=sheet, pre=preprocess_from_args(args), skip_bad=args.skip_bad,
                        n_sheet=args.n_sheet, workers=args.workers, progress=not args.quiet)
    print("\n".join(rep.lines()))
    if args.skip_report and rep.skipped:
        write_text(args.skip_report, "\n".join(rep.skipped) + "\n")
        print(f"skip report    {args.skip_report}")
    return 0


def kinds(args: argparse.Namespace) -> int:
    """List dataset kinds and their options."""
    from equinv.data.spec import describe_kinds

    print("Dataset kinds (use as KIND:PATH[?key=value&...]):")
    print(describe_kinds())
    return 0


def register(sub) -> None:
    """Add ``equinv data check`` and ``equinv data kinds``."""
    data = sub.add_parser("data", help="inspect datasets", description="Inspect datasets.")
    dsub = data.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    c = dsub.add_parser(
        "check",
        help="load a dataset, print counts, write a contact sheet",
        description="Read and validate every annotation, decode every image (filling the decoded-image "
        "cache), print counts (images, annotated, landmarks, visible points, image sizes) and write a "
        "contact sheet PNG of preprocessed samples with landmarks drawn.",
    )
    c.add_argument("spec", help=SPEC_HELP)
    c.add_argument("--out", default="data_check.png", help="contact sheet PNG (default data_check.png)")
    c.add_argument("--no-sheet", action="store_true", help="do not write a contact sheet")
    c.add_argument("--n-sheet", type=positive_int, default=32, help="samples on the sheet (default 32)")
    c.add_argument("--skip-bad", action="store_true", help="skip bad inputs (counted and listed) instead of stopping")
    c.add_argument("--skip-report", default=None, help="write the list of skipped inputs to this file")
    c.add_argument("--workers", type=positive_int, default=2, help="decoding threads (default 2)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    add_preprocess_args(c)
    c.set_defaults(fn=check)
    k = dsub.add_parser("kinds", help="list dataset kinds and their options")
    k.set_defaults(fn=kinds)

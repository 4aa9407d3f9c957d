"""``equinv eval match``: the matching benchmark (protocol §5a) as a JSON record."""

from __future__ import annotations

import argparse

from equinv.commands.options import add_feature_args, add_run_args, feature_spec, nonneg_int, positive_int
from equinv.outputs import check_dir


def run(args: argparse.Namespace) -> int:
    """Measure same- and different-identity matching errors; write the record and its report page."""
    from equinv.evaluate.match_eval import eval_match
    from equinv.report.page import write_run_page

    check_dir(args.out)
    res = eval_match(args.data, feature_spec(args, seed=0), pairs=args.pairs, seed=args.seed, batch=args.batch_size,
                     device=args.device, out=args.out, progress=not args.quiet)
    print(f"{res['config']['descriptor']}: same identity {res['match_error_same']:.2f}, different identity "
          f"{res['match_error_diff']:.2f} (70-px frame; {res['match_error_same_px']:.2f} / "
          f"{res['match_error_diff_px']:.2f} px at 96)")
    print(f"wrote {args.out}/match.json")
    print(f"wrote {write_run_page(args.out)[1]}")
    return 0


def register(sub) -> None:
    """Add ``equinv eval match`` to the eval group."""
    p = sub.add_parser(
        "match",
        help="landmark matching error: same identity (TPS-warped copies) and different identity pairs",
        description="The paper's matching protocol (§5a): N seeded pairs of a labelled dataset warped with TPS "
        "(same identity) and N pairs of different images (different identity); descriptors at 96x96, hard "
        "nearest neighbour by cosine; the error is the distance of the matched point to the true one in the "
        "70-px DVE frame (and in pixels of the 96 input). Descriptors: any feature source, each map "
        "L2-normalised per pixel (per layer for the hypercolumn, the reference's matching descriptor), e.g. a "
        "trained projector's output, NMF coefficients, or a DVE network (given as --backbone DVE_RUN).",
        epilog="Example: equinv eval match --backbone runs/celeba_r18 --data "
        "celeba:../shared/data/celeba?split=mafl_test --out runs/match_hc",
    )
    add_feature_args(p, grid="96 (the protocol's)", readout="output")
    p.add_argument("--data", required=True, metavar="SPEC", help="labelled dataset KIND:PATH[?k=v]")
    p.add_argument("--pairs", type=positive_int, default=500, help="pairs per identity setting (default 500)")
    p.add_argument("--seed", type=nonneg_int, default=1, help="pair sampling seed (default 1)")
    p.add_argument("--batch-size", type=positive_int, default=16)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (match.json)")
    add_run_args(p)
    p.set_defaults(fn=run)

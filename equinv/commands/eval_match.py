"""``equinv eval match``: the matching benchmark (protocol §5a) as a JSON record."""

from __future__ import annotations

import argparse

from equinv.errors import InputError

ARCHES = ["resnet18", "resnet34", "resnet50", "resnet50_half"]


def cmd_match(args: argparse.Namespace) -> int:
    from equinv.evaluate.match_eval import eval_match

    try:
        res = eval_match(args.data, backbone=args.backbone, arch=args.arch, layer=args.layer,
                         descriptor=args.descriptor, projector=args.projector, parts=args.parts, pairs=args.pairs,
                         seed=args.seed, batch=args.batch_size, device=args.device, out=args.out,
                         progress=not args.quiet)
    except ValueError as e:
        raise InputError(str(e)) from None
    print(f"{res['config']['descriptor']}: same identity {res['match_error_same']:.2f}, different identity "
          f"{res['match_error_diff']:.2f} (70-px frame; {res['match_error_same_px']:.2f} / "
          f"{res['match_error_diff_px']:.2f} px at 96)")
    print(f"wrote {args.out}/match.json")
    from equinv.report.page import write_run_page

    print(f"wrote {write_run_page(args.out)[1]}")
    return 0


def add_eval(sub) -> None:
    p = sub.add_parser(
        "match",
        help="landmark matching error: same identity (TPS-warped copies) and different identity pairs",
        description="The paper's matching protocol (§5a): N seeded pairs of a labelled dataset warped with TPS "
        "(same identity) and N pairs of different images (different identity); descriptors at 96x96, hard "
        "nearest neighbour by cosine; the error is the distance of the matched point to the true one in the "
        "70-px DVE frame (and in pixels of the 96 input). Descriptors: the per-layer normalised hypercolumn, "
        "a trained projector's output, NMF coefficients, or a DVE network (given as --backbone DVE_RUN).",
        epilog="Example: equinv eval match --backbone runs/celeba_r18 --data "
        "celeba:../shared/data/celeba?split=mafl_test --out runs/match_hc",
    )
    p.add_argument("--data", required=True, metavar="SPEC", help="labelled dataset KIND:PATH[?k=v]")
    p.add_argument("--backbone", default="random",
                   help="pretraining run dir, weights file, DVE run dir/weights, or 'random' (default)")
    p.add_argument("--arch", default="resnet18", choices=ARCHES)
    p.add_argument("--layer", type=int, default=4, help="hypercolumn depth, the reference --layer (default 4)")
    p.add_argument("--descriptor", default="hypercolumn", choices=["hypercolumn", "projected", "nmf", "dve"],
                   help="descriptor kind (default hypercolumn; a DVE --backbone implies dve)")
    p.add_argument("--projector", default=None, help="equinv project run or checkpoint (--descriptor projected)")
    p.add_argument("--parts", default=None, help="NMF parts file from equinv parts (--descriptor nmf)")
    p.add_argument("--pairs", type=int, default=500, help="pairs per identity setting (default 500)")
    p.add_argument("--seed", type=int, default=1, help="pair sampling seed (default 1)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default=None)
    p.add_argument("--out", required=True, metavar="DIR", help="output directory (match.json)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(fn=cmd_match)

"""``equinv eval regress``: train the landmark regressor on frozen features and report IOD error / PCK (protocol §4)."""

from __future__ import annotations

import argparse

from equinv.commands.options import (
    add_feature_args,
    add_run_args,
    feature_spec,
    n_train_arg,
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


def config_from_args(args: argparse.Namespace):
    """The :class:`~equinv.evaluate.regression.RegressionConfig` of parsed arguments."""
    from equinv.evaluate.regression import RegressionConfig

    return RegressionConfig(
        train=args.train, val=args.val, test=list(args.test), features=feature_spec(args), finetune=args.finetune,
        finetune_lr_mult=args.finetune_lr_mult, n_heatmaps=args.n_heatmaps, heatmap_init_std=args.heatmap_init_std,
        softargmax_mul=args.softargmax_mul, epochs=args.epochs, lr=args.lr, wd=args.wd, batch_size=args.batch_size,
        n_train=args.n_train, repeats=args.repeats, tps_aug=args.tps_aug, tps_copies=args.tps_copies,
        seed=args.seed, paper_pck=args.paper_pck, eval_batch_size=args.eval_batch_size, device=args.device,
        cache_dir=args.cache_dir, input_scale=args.input_scale, anchor=args.anchor,
    )


def print_epoch(quiet: bool):
    """A training-log printer (nothing with ``quiet``)."""

    def log(entry: dict) -> None:
        if not quiet:
            val = f" val {entry['val']:.3f}" if "val" in entry else ""
            print(f"epoch {entry['epoch']:4d} loss {entry['loss']:.4f} lr {entry['lr']:.2e}{val}", flush=True)

    return log


def run(args: argparse.Namespace) -> int:
    """Train, evaluate, write the record and its report page; print one line per entry and test set."""
    from equinv.evaluate.regression import run_regression
    from equinv.report.page import write_run_page

    check_dir(args.out)
    if args.cache_dir:
        check_dir(args.cache_dir, "--cache-dir")
    res = run_regression(config_from_args(args), args.out, log=print_epoch(args.quiet), progress=not args.quiet)
    for r in res["runs"]:
        for spec, t in r["tests"].items():
            iod = "" if t["iod_error_percent"] is None else \
                f"IOD {t['iod_error_percent']:.2f}% ± {t['iod_error_percent_std']:.2f}  "
            extra = f"  paper PCK {t['paper_pck']:.2f}%" if t.get("paper_pck") is not None else ""
            print(f"n_train {r['n_train']:6d} x{r['repeats']}  {spec}: {iod}PCK {t['pck']:.2f}%{extra}")
    print(f"wrote {args.out}/regression.json")
    print(f"wrote {write_run_page(args.out)[1]}")
    return 0


def register(sub) -> None:
    """Add ``equinv eval regress`` to the eval group."""
    r = sub.add_parser(
        "regress",
        help="train the landmark regressor on frozen hypercolumns; IOD error / PCK on test specs",
        description="Frozen features are computed once per image (fp16 per-layer maps; memmaps under --cache-dir), "
        "then KeypointRegressor is trained (Adam betas (0.5, 0.999), cosine lr, batch 32, smooth-L1 on x10 "
        "normalised coordinates). The epoch with the best --val metric is kept (last epoch without --val). "
        "Defaults lr 1e-3 / wd 5e-4, or 1e-2 / 5e-2 when --n-train N <= 100.",
        epilog="Example: equinv eval regress --backbone runs/celeba_r18 --arch resnet18 "
        "--train celeba:../shared/data/celeba?split=mafl_train --test celeba:../shared/data/celeba?split=mafl_test "
        "--epochs 120 --out runs/eval_mafl",
    )
    add_feature_args(r, grid="48; a single layer or DVE map: its native side, as the reference", readout="linear")
    r.add_argument("--finetune", action="store_true",
                   help="fine-tune the backbone with the regressor (appendix A.2; no feature cache)")
    r.add_argument("--n-heatmaps", type=positive_int, default=50,
                   help="intermediate heat-maps per landmark (default 50)")
    r.add_argument("--heatmap-init-std", type=_heatmap_init, default=1.0, metavar="STD|fan-in",
                   help="std of the heat-map weights' init (default 1, the reference; ~0.03 converges much faster "
                   "in short runs; 'fan-in': 1/sqrt(sum of the training features' channel variances), so the "
                   "initial heat-map logits vary by ~1 whatever the features; see docs/evaluation.md)")
    r.add_argument("--softargmax-mul", type=positive_float, default=100.0,
                   help="softmax multiplier of the heat-maps (default 100, the reference; 3 starts from soft maps "
                   "and converges in a few thousand steps, see docs/evaluation.md)")
    r.add_argument("--input-scale", choices=("auto", "none", "std"), default="auto",
                   help="divide each feature channel by its std over the training features before the regressor: "
                   "'std', 'none' (the reference) or 'auto' (default: std for --source projected/nmf, whose "
                   "channels are far from O(1) and otherwise leave the heat-maps uniform; none for the "
                   "hypercolumn and DVE)")
    r.add_argument("--anchor", action="store_true",
                   help="start each regressor from the mean shape of its training subset (equinv fit's default; "
                   "the reference starts from a random linear map)")
    r.add_argument("--finetune-lr-mult", type=nonneg_float, default=0.1,
                   help="backbone lr / regressor lr (default 0.1)")
    r.add_argument("--train", required=True, metavar="SPEC", help="training dataset KIND:PATH[?k=v]")
    r.add_argument("--val", default=None, metavar="SPEC", help="validation dataset for epoch selection")
    r.add_argument("--test", required=True, action="append", metavar="SPEC", help="test dataset (repeatable)")
    r.add_argument("--epochs", type=positive_int, default=50, help="epochs = cosine horizon (default 50)")
    r.add_argument("--lr", type=positive_float, default=None, help="learning rate (default: protocol, see above)")
    r.add_argument("--wd", type=nonneg_float, default=None, help="weight decay (default: protocol, see above)")
    r.add_argument("--batch-size", type=positive_int, default=32)
    r.add_argument("--n-train", type=n_train_arg, default=[None],
                   help="comma list of training-subset sizes, e.g. 1,5,10 (or 'all')")
    r.add_argument("--repeats", type=positive_int, default=1,
                   help="seeded subset draws per --n-train size (mean ± std)")
    r.add_argument("--tps-aug", action="store_true",
                   help="TPS-warped copies of the subset images (precomputed once, not redrawn per epoch)")
    r.add_argument("--tps-copies", type=positive_int, default=8,
                   help="warped copies per image with --tps-aug (default 8)")
    r.add_argument("--paper-pck", action="store_true", help="also report the reference's quirky PCK")
    r.add_argument("--eval-batch-size", type=positive_int, default=32, help="batch size of the paper PCK averaging")
    r.add_argument("--seed", type=nonneg_int, default=0)
    r.add_argument("--cache-dir", default=None, help="keep features as .npy memmaps here (reused across runs)")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (regression.json)")
    add_run_args(r)
    r.set_defaults(fn=run)

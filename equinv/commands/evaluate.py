"""``equinv eval ...``: evaluation command group. ``eval regress`` trains the landmark regressor (protocol §4).

Other subcommands live in ``equinv/commands/eval_<name>.py`` modules, each with an ``add_eval(sub)``
function that adds its parser to the group; :func:`register` finds and calls them (``eval match``,
``eval segment``, ...).
"""

from __future__ import annotations

import argparse

from equinv.errors import InputError

#: The ``eval`` subparsers object (``dest="eval_command"``); ``None`` until :func:`register` runs.
EVAL_SUB = None


def add_eval_subcommand(name: str, **kwargs) -> argparse.ArgumentParser:
    """Add ``equinv eval NAME`` to the group; returns its parser (call after :func:`register`)."""
    if EVAL_SUB is None:
        raise RuntimeError("the eval command group is not registered yet")
    return EVAL_SUB.add_parser(name, **kwargs)


def _n_train(text: str | None) -> list[int | None]:
    if not text:
        return [None]
    out: list[int | None] = []
    for tok in text.split(","):
        tok = tok.strip()
        if tok in ("all", ""):
            out.append(None)
            continue
        try:
            out.append(int(tok))
        except ValueError:
            raise InputError(f"--n-train: {tok!r} is not an integer (use e.g. 1,5,10 or all)") from None
    return out


def _heatmap_init(text: str) -> float | str:
    from equinv.evaluate.regression import resolve_heatmap_init

    try:
        return resolve_heatmap_init(text)
    except InputError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def cmd_regress(args: argparse.Namespace) -> int:
    from equinv.evaluate.regression import RegressionConfig, run_regression
    from equinv.report.page import write_run_page

    cfg = RegressionConfig(
        train=args.train, val=args.val, test=list(args.test), backbone=args.backbone, arch=args.arch,
        layers=args.layers, source=args.source, taps=args.taps.split(",") if args.taps else None,
        projector=args.projector, parts=args.parts, grid=args.grid, finetune=args.finetune,
        finetune_lr_mult=args.finetune_lr_mult, n_heatmaps=args.n_heatmaps,
        heatmap_init_std=args.heatmap_init_std, softargmax_mul=args.softargmax_mul, epochs=args.epochs, lr=args.lr,
        wd=args.wd, batch_size=args.batch_size,
        n_train=_n_train(args.n_train), repeats=args.repeats, tps_aug=args.tps_aug, tps_copies=args.tps_copies,
        seed=args.seed, paper_pck=args.paper_pck, eval_batch_size=args.eval_batch_size, device=args.device,
        cache_dir=args.cache_dir, input_scale=args.input_scale,
        proj_readout=args.proj_readout,
    )

    def log(entry: dict) -> None:
        if not args.quiet:
            val = f" val {entry['val']:.3f}" if "val" in entry else ""
            print(f"epoch {entry['epoch']:4d} loss {entry['loss']:.4f} lr {entry['lr']:.2e}{val}", flush=True)

    res = run_regression(cfg, args.out, log=log, progress=not args.quiet)
    for run in res["runs"]:
        for spec, t in run["tests"].items():
            iod = "" if t["iod_error_percent"] is None else \
                f"IOD {t['iod_error_percent']:.2f}% ± {t['iod_error_percent_std']:.2f}  "
            extra = f"  paper PCK {t['paper_pck']:.2f}%" if t.get("paper_pck") is not None else ""
            print(f"n_train {run['n_train']:6d} x{run['repeats']}  {spec}: {iod}PCK {t['pck']:.2f}%{extra}")
    print(f"wrote {args.out}/regression.json")
    print(f"wrote {write_run_page(args.out)[1]}")
    return 0


def register(sub) -> None:
    global EVAL_SUB
    p = sub.add_parser("eval", help="evaluate a backbone (landmark regression, ...)",
                       description="Evaluation of learnt representations.")
    EVAL_SUB = p.add_subparsers(dest="eval_command", metavar="SUBCOMMAND", required=True)
    r = EVAL_SUB.add_parser(
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
    r.add_argument("--backbone", default="random",
                   help="pretraining run dir, weights file (ours or torchvision's, e.g. ImageNet), DVE run, or "
                   "'random' (default)")
    r.add_argument("--arch", default="resnet18", choices=["resnet18", "resnet34", "resnet50", "resnet50_half"])
    r.add_argument("--layers", type=int, default=4, help="hypercolumn depth, the reference --layer (default 4)")
    r.add_argument("--taps", default=None,
                   help="explicit taps instead of --layers, e.g. conv4 (one layer, Table 3) or conv5,conv4")
    r.add_argument("--source", default="hypercolumn", choices=["hypercolumn", "projected", "nmf", "dve"],
                   help="features: hypercolumn (default), projected (--projector), nmf (--parts), dve "
                   "(--backbone DVE_RUN; also implied by it)")
    r.add_argument("--projector", default=None, help="equinv project run or checkpoint (--source projected)")
    r.add_argument("--parts", default=None, help="NMF parts file from equinv parts --method nmf (--source nmf)")
    r.add_argument("--grid", type=int, default=None,
                   help="heat-map grid side (default 48; a single layer or DVE map: its native side, as the reference)")
    r.add_argument("--finetune", action="store_true",
                   help="fine-tune the backbone with the regressor (appendix A.2; no feature cache)")
    r.add_argument("--n-heatmaps", type=int, default=50, help="intermediate heat-maps per landmark (default 50)")
    r.add_argument("--heatmap-init-std", type=_heatmap_init, default=1.0, metavar="STD|fan-in",
                   help="std of the heat-map weights' init (default 1, the reference; ~0.03 converges much faster "
                   "in short runs; 'fan-in': 1/sqrt(sum of the training features' channel variances), so the "
                   "initial heat-map logits vary by ~1 whatever the features; see docs/evaluation.md)")
    r.add_argument("--softargmax-mul", type=float, default=100.0,
                   help="softmax multiplier of the heat-maps (default 100, the reference; 3 starts from soft maps "
                   "and converges in a few thousand steps, see docs/evaluation.md)")
    r.add_argument("--input-scale", choices=("auto", "none", "std"), default="auto",
                   help="divide each feature channel by its std over the training features before the regressor: "
                   "'std', 'none' (the reference) or 'auto' (default: std for --source projected/nmf, whose "
                   "channels are far from O(1) and otherwise leave the heat-maps uniform; none for the "
                   "hypercolumn and DVE)")
    r.add_argument("--proj-readout", choices=("linear", "output"), default="linear",
                   help="--source projected: regress on the projection w'Φ + b before the reference projector's "
                   "spatial softmax ('linear', default: the paper's Φ' = wᵀΦ) or on the softmax maps it outputs "
                   "('output', its matching descriptor)")
    r.add_argument("--finetune-lr-mult", type=float, default=0.1, help="backbone lr / regressor lr (default 0.1)")
    r.add_argument("--train", required=True, metavar="SPEC", help="training dataset KIND:PATH[?k=v]")
    r.add_argument("--val", default=None, metavar="SPEC", help="validation dataset for epoch selection")
    r.add_argument("--test", required=True, action="append", metavar="SPEC", help="test dataset (repeatable)")
    r.add_argument("--epochs", type=int, default=50, help="epochs = cosine horizon (default 50)")
    r.add_argument("--lr", type=float, default=None, help="learning rate (default: protocol, see above)")
    r.add_argument("--wd", type=float, default=None, help="weight decay (default: protocol, see above)")
    r.add_argument("--batch-size", type=int, default=32)
    r.add_argument("--n-train", default=None, help="comma list of training-subset sizes, e.g. 1,5,10 (or 'all')")
    r.add_argument("--repeats", type=int, default=1, help="seeded subset draws per --n-train size (mean ± std)")
    r.add_argument("--tps-aug", action="store_true",
                   help="TPS-warped copies of the subset images (precomputed once, not redrawn per epoch)")
    r.add_argument("--tps-copies", type=int, default=8, help="warped copies per image with --tps-aug (default 8)")
    r.add_argument("--paper-pck", action="store_true", help="also report the reference's quirky PCK")
    r.add_argument("--eval-batch-size", type=int, default=32, help="batch size of the paper PCK averaging")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--device", default=None)
    r.add_argument("--cache-dir", default=None, help="keep features as .npy memmaps here (reused across runs)")
    r.add_argument("--out", required=True, metavar="DIR", help="output directory (regression.json)")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(fn=cmd_regress)
    _add_plugins(EVAL_SUB)


def _add_plugins(sub) -> None:
    import importlib
    import pkgutil

    import equinv.commands

    for info in sorted(pkgutil.iter_modules(equinv.commands.__path__), key=lambda m: m.name):
        if info.name.startswith("eval_"):
            module = importlib.import_module(f"equinv.commands.{info.name}")
            module.add_eval(sub)

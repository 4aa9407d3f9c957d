"""``equinv eval segment``: figure-ground segmentation with a 1×1 conv head on hypercolumns (paper appendix E)."""

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
from equinv.outputs import check_dir

DESCRIPTION = """\
Train a 1x1 convolution (one logit over per-channel standardised hypercolumn features) on
foreground masks; report the mean per-image foreground IoU on each test spec (paper appendix E,
Table 11), with limited-annotation subsets (--n-train, --repeats) and the IoU of two data-blind
references (all-foreground, the mean training mask).

Frozen (default): features are computed once per image (fp16; memmaps under --cache-dir).
--finetune trains the trunk too (lr x --trunk-lr-mult, BatchNorm statistics fixed) and
recomputes its features every step.

Masks: the synthetic kind has its own. Otherwise --masks DIR (for every spec) or a masks=DIR
option in one spec: DIR holds one PNG per image, at the image's path relative to the dataset
root with the suffix replaced by .png (leading folders may be dropped, so CUB's segmentations/
folder works). Any mode, same size as the image; foreground = grey level > 127 (palette and
1-bit: value > 0). Details: docs/segmentation.md.
"""

EPILOG = (
    "Examples:\n"
    "  equinv eval segment --backbone random --train synthetic:512?size=96 "
    "--test 'synthetic:128?size=96&seed=1' --n-train 1,10,all --repeats 3 --out runs/seg_random\n"
    "  equinv eval segment --backbone runs/birds_r50 --arch resnet50 "
    "--train 'cub:../data/CUB_200_2011?split=train' --test 'cub:../data/CUB_200_2011?split=test' "
    "--masks ../data/segmentations --n-train 10,50,100,250,all --finetune --out runs/seg_cub"
)


def run(args: argparse.Namespace) -> int:
    """Train and evaluate the segmentation head; print one line per entry and test set."""
    from equinv.evaluate.segmentation import SegmentationConfig, run_segmentation

    check_dir(args.out)
    if args.cache_dir:
        check_dir(args.cache_dir, "--cache-dir")
    cfg = SegmentationConfig(
        train=args.train, val=args.val, test=list(args.test), masks=args.masks, features=feature_spec(args),
        epochs=args.epochs, lr=args.lr, wd=args.wd, batch_size=args.batch_size, n_train=args.n_train,
        repeats=args.repeats, finetune=args.finetune, trunk_lr_mult=args.trunk_lr_mult, seed=args.seed,
        device=args.device, cache_dir=args.cache_dir,
    )

    def log(entry: dict) -> None:
        if not args.quiet:
            val = f" val IoU {entry['val_iou']:.3f}" if "val_iou" in entry else ""
            print(f"epoch {entry['epoch']:4d} loss {entry['loss']:.4f} lr {entry['lr']:.2e}{val}", flush=True)

    res = run_segmentation(cfg, args.out, log=log)
    mode = "finetune" if args.finetune else "frozen"
    for r in res["runs"]:
        for spec, t in r["tests"].items():
            base = res["baselines"][spec]
            print(f"n_train {r['n_train']:6d} x{r['repeats']} {mode}  {spec}: IoU {t['iou']:.3f} ± "
                  f"{t['iou_std']:.3f} ({t['n_images']} images; all-foreground {base['all_foreground']:.3f}, "
                  f"mean mask {base['mean_mask']:.3f})")
    print(f"wrote {args.out}/segment.json")
    return 0


def register(sub) -> None:
    """Add ``equinv eval segment`` to the eval group."""
    p = sub.add_parser("segment", help="figure-ground segmentation: 1x1 conv on hypercolumns, IoU on test specs",
                       description=DESCRIPTION, epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_feature_args(p, grid="48 (the logit grid)", readout="linear")
    p.add_argument("--train", required=True, metavar="SPEC", help="training dataset KIND:PATH[?k=v][&masks=DIR]")
    p.add_argument("--val", default=None, metavar="SPEC", help="validation dataset (epoch with the best IoU kept)")
    p.add_argument("--test", required=True, action="append", metavar="SPEC", help="test dataset (repeatable)")
    p.add_argument("--masks", default=None, metavar="DIR",
                   help="mask folder for every spec (a spec's masks=DIR option wins; synthetic needs none)")
    p.add_argument("--epochs", type=positive_int, default=30, help="epochs = cosine horizon (default 30)")
    p.add_argument("--lr", type=positive_float, default=1e-3, help="Adam learning rate of the head (default 1e-3)")
    p.add_argument("--wd", type=nonneg_float, default=0.0, help="weight decay (default 0)")
    p.add_argument("--batch-size", type=positive_int, default=32)
    p.add_argument("--n-train", type=n_train_arg, default=[None],
                   help="comma list of training-subset sizes, e.g. 1,10,all")
    p.add_argument("--repeats", type=positive_int, default=1,
                   help="seeded subset draws per --n-train size (mean ± std)")
    p.add_argument("--finetune", action="store_true", help="train the trunk too (no feature cache)")
    p.add_argument("--trunk-lr-mult", type=nonneg_float, default=0.1, help="trunk lr = lr x this with --finetune")
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--cache-dir", default=None, help="keep frozen features as .npy memmaps here (reused)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output directory (segment.json, segment_predictions.npz)")
    add_run_args(p)
    p.set_defaults(fn=run)

"""``equinv project``: train a feature projector on a frozen hypercolumn (protocol.md §3)."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import (
    ARCH_NAMES,
    TPS_PRESETS,
    add_device_arg,
    add_precision_arg,
    deprecated,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
)
from equinv.outputs import check_dir

_FIELDS = ("backbone", "arch", "layer", "data", "val", "val_pairs", "val_seed", "mode", "projector", "dim",
           "softargmax_mul", "temperature", "power", "tps", "train_size", "size", "lr", "weight_decay", "epochs",
           "batch_size", "max_images", "seed", "trunk_lr", "init", "precision", "channels_last", "device",
           "match_batch", "feature_cache_gb", "log_every")


def run(args: argparse.Namespace) -> int:
    """Train (or --resume) an equivariant projector."""
    from equinv.train.projector import ProjectConfig, train_projector

    check_dir(args.resume or args.out, "--resume" if args.resume else "--out")
    # only the options given on the command line (a resume applies or refuses them in the library)
    values = {f: getattr(args, f) for f in _FIELDS if getattr(args, f) is not None}
    values.update({"augment": args.augment} if args.augment is not None else {})
    values.update({"skip_bad": True} if args.skip_bad else {})
    if args.resume:
        train_projector(ProjectConfig.resume(args.resume, values), resume=True, progress=not args.quiet)
        return 0
    cfg = ProjectConfig(out=args.out, **values)
    out = train_projector(cfg, progress=not args.quiet)
    if out["best"] is not None:
        b = out["best"]
        print(f"best epoch {b['epoch']}: match same {b['match_error_same']:.3f}, diff {b['match_error_diff']:.3f} "
              f"(70-px frame) -> {Path(cfg.out) / 'checkpoints' / 'best.safetensors'}")
    return 0


def register(sub) -> None:
    """Add ``equinv project``."""
    p = sub.add_parser(
        "project",
        help="train a feature projector on a frozen hypercolumn (or with its trunk: --trunk-lr; resumable)",
        description="Feature projector as the reference code (protocol.md §3): 1x1 conv + spatial softmax (x6.5 "
        "for d=64, x7 otherwise), reference loss sum_v |u-v|^0.5 p(v|u) on a 24x24 grid with T=8 (d=64) / 7, "
        "Adam lr 1e-3 betas (0.5, 0.999) wd 5e-4, cosine over the epochs, batch 32, MoCo face augmentations. "
        "--mode paper: linear projector and Eq. 3 on (x, TPS(x)) pairs. --mode dve: DVE's loss through an auxiliary "
        "face on DVE's TPS pairs (equinv's option). After each epoch: landmark matching "
        "on a seeded subset of --val; best.safetensors = lowest different-identity error.",
        epilog="Example: equinv project --backbone runs/celeba_r18 --arch resnet18 --dim 64 --epochs 10 "
        "--out runs/proj_r18_d64",
    )
    p.add_argument("--backbone", default=None, help="pretraining run dir, weights file, or 'random' (default)")
    p.add_argument("--arch", choices=ARCH_NAMES, default=None, help="ResNet trunk (default resnet18)")
    p.add_argument("--layers", dest="layer", type=positive_int, default=None,
                   help="hypercolumn depth, the reference's --layer (default 4)")
    deprecated(p, "--layer", "--layers", "layer", type=positive_int)
    p.add_argument("--data", default=None, help="training images; default celeba:../shared/data/celeba?split=not_mafl")
    p.add_argument("--val", default=None,
                   help="labelled validation set for matching (never a test split); default CelebA mafl_train")
    p.add_argument("--val-pairs", type=positive_int, default=None, help="matching pairs per validation (default 500)")
    p.add_argument("--val-seed", type=nonneg_int, default=None,
                   help="seed of the validation subset and warps (default 1)")
    p.add_argument("--mode", choices=["reference", "paper", "dve"], default=None,
                   help="reference (default: the reference code's loss on one augmented view), paper (Eq. 3 on "
                   "(x, TPS(x))) or dve (equinv's: DVE's pairs and loss through an auxiliary face, T 20; "
                   "docs/pretraining.md)")
    p.add_argument("--projector", choices=["softmax", "linear"], default=None,
                   help="projector kind: 1x1 conv + spatial softmax (default in reference mode) or linear (default in "
                   "paper and dve modes)")
    p.add_argument("--dim", type=positive_int, default=None, help="projected dimension d (default 64)")
    p.add_argument("--softargmax-mul", type=positive_float, default=None,
                   help="softmax multiplier (default 6.5 for d=64, else 7)")
    p.add_argument("--temperature", type=positive_float, default=None,
                   help="loss logit scale T (default 8 for d=64 reference, 20 dve, else 7)")
    p.add_argument("--power", type=positive_float, default=None,
                   help="distance exponent (default 0.5 reference and dve, 1 paper)")
    aug = p.add_mutually_exclusive_group()
    aug.add_argument("--augment", dest="augment", action="store_true", default=None,
                     help="MoCo face augmentations (default in reference mode)")
    aug.add_argument("--no-augment", dest="augment", action="store_false",
                     help="no augmentations (the paper's wording; default in paper mode; caches hypercolumns)")
    p.add_argument("--tps", choices=TPS_PRESETS, default=None,
                   help="paper mode: TPS preset for x' = TPS(x) (default dve)")
    p.add_argument("--train-size", type=positive_int, default=None, help="training grid side (default 24)")
    p.add_argument("--size", type=positive_int, default=None, help="input side (default 96)")
    p.add_argument("--lr", type=nonneg_float, default=None, help="Adam learning rate (default 1e-3)")
    p.add_argument("--weight-decay", type=nonneg_float, default=None, help="default 5e-4")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 10")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default 32")
    p.add_argument("--max-images", type=positive_int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--seed", type=nonneg_int, default=None,
                   help="seed of the projector's init, image subset and batches (default 0); --backbone random is "
                   "always the one random network every reader builds")
    p.add_argument("--trunk-lr", type=nonneg_float, default=None,
                   help="train the ResNet trunk with the projector at this Adam lr, on the same cosine schedule, "
                   "batch-norm statistics frozen (equinv's option; default 0: the trunk stays frozen, as in the paper "
                   "and the reference). The run then carries its trunk: --projector RUN reads it, and "
                   "RUN/backbone.safetensors makes --backbone RUN its hypercolumn. 1e-4 is steady after a "
                   "frozen-trunk run (--init); docs/representations.md")
    p.add_argument("--init", default=None, metavar="RUN",
                   help="start from a trained projector run or checkpoint (and its trunk, if it was trained with one)")
    add_precision_arg(p, "the frozen trunk's pass (the projector and its loss stay fp32)")
    add_device_arg(p)
    p.add_argument("--match-batch", type=positive_int, default=None,
                   help="pairs per matching forward pass (default 16)")
    p.add_argument("--feature-cache-gb", type=nonneg_float, default=None,
                   help="budget for cached hypercolumn maps without augmentation (default 4; 0 = off)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between log lines (default 10)")
    p.add_argument("--skip-bad", action="store_true", help="skip undecodable images instead of failing")
    p.add_argument("--out", default="runs/project", help="run directory (default runs/project)")
    p.add_argument("--resume", default=None, metavar="RUN", help="continue RUN after its last finished epoch")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(fn=run)

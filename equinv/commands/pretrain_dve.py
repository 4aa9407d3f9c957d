"""``equinv pretrain-dve``: train the DVE baseline descriptor network (protocol.md §7); ``pretrain --method dve``."""

from __future__ import annotations

import argparse

from equinv.commands.options import (
    DVE_ARCHS,
    add_device_arg,
    add_precision_arg,
    nonneg_float,
    nonneg_int,
    positive_int,
)
from equinv.errors import InputError
from equinv.outputs import check_dir

#: CLI attribute → DVEConfig field (same names).
FIELDS = ("arch", "dim", "size", "input_size", "batch_size", "lr", "bias_lr", "epochs", "max_images",
          "max_minutes", "seed", "precision", "channels_last", "workers", "device", "ckpt_every", "save_every",
          "log_every", "loss_chunk")


def given_options(args: argparse.Namespace) -> dict:
    """The DVEConfig fields given on the command line (every option defaults to ``None`` = not given)."""
    values = {f: getattr(args, f) for f in FIELDS if getattr(args, f, None) is not None}
    if args.data:
        values["data"] = list(args.data)
    if getattr(args, "skip_bad", None):
        values["skip_bad"] = True
    return values


def config_from_args(args: argparse.Namespace):
    """A :class:`~equinv.train.dve.DVEConfig` from parsed arguments (``None`` values keep the defaults)."""
    from equinv.train.dve import DVEConfig

    return DVEConfig(out=args.out, **given_options(args))


def run(args: argparse.Namespace) -> int:
    """Train (or --resume) a DVE descriptor network."""
    from equinv.train.dve import DVEConfig, train_dve

    check_dir(args.resume or args.out, "--resume" if args.resume else "--out")
    if args.resume:  # the library applies the options that may change and refuses the others
        train_dve(DVEConfig.resume(args.resume, given_options(args)), resume=True, progress=not args.quiet)
        return 0
    if not args.data:
        raise InputError("give --data KIND:PATH (repeatable) or --resume RUN_DIR")
    train_dve(config_from_args(args), progress=not args.quiet)
    return 0


def add_dve_arguments(p: argparse.ArgumentParser) -> None:
    """The DVE options (all default to ``None`` = the arch's reference value)."""
    p.add_argument("--arch", choices=DVE_ARCHS, default=None, help="default hourglass")
    p.add_argument("--dim", type=positive_int, default=None, help="descriptor dimension (default 64)")
    p.add_argument("--size", type=positive_int, default=None, help="view side after the 20-px slice (default 96)")
    p.add_argument("--input-size", type=positive_int, default=None,
                   help="network input side; views are resized to it (default 96 hourglass, 70 smallnet)")
    p.add_argument("--batch-size", type=positive_int, default=None,
                   help="pairs per step (default 16 hourglass, 32 smallnet)")
    p.add_argument("--lr", type=nonneg_float, default=None, help="Adam (amsgrad) learning rate (default 1e-3)")
    p.add_argument("--bias-lr", type=nonneg_float, default=None,
                   help="bias learning rate (default 1e-5 smallnet, else lr)")
    p.add_argument("--epochs", type=positive_int, default=None, help="default 100")
    p.add_argument("--max-images", type=positive_int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--max-minutes", type=nonneg_float, default=None,
                   help="wall-clock budget; checkpoint and stop when spent (continue with --resume)")
    p.add_argument("--loss-chunk", type=positive_int, default=None, help="images per vectorised loss chunk (memory)")
    p.add_argument("--seed", type=nonneg_int, default=None, help="default 0")
    add_precision_arg(p, "the network pass (the loss stays fp32)")
    p.add_argument("--workers", type=nonneg_int, default=None, help="unused (data is read in the main process)")
    add_device_arg(p)
    p.add_argument("--ckpt-every", type=positive_int, default=None, help="steps between checkpoints (default 200)")
    p.add_argument("--save-every", type=nonneg_int, default=None, help="epochs between kept checkpoints (default 50)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between log lines (default 10)")


def register(sub) -> None:
    """Add ``equinv pretrain-dve``."""
    p = sub.add_parser(
        "pretrain-dve",
        help="train the DVE baseline (SmallNet or Hourglass descriptors; resumable)",
        description="Dense equivariant descriptors (Thewlis et al. 2019) as the DVE code (protocol.md §7): "
        "TPS pairs on the 136 canvas, 20-px slice, JPEG/jitter/PCA per view, dense correlation loss with an "
        "auxiliary image. Hourglass: batch 16, Adam 1e-3 amsgrad, StepLR(50); SmallNet: batch 32, bias lr 1e-5, "
        "MultiStep [70, 90]. Writes RUN/descriptor.safetensors.",
        epilog="Example: equinv pretrain-dve --data celeba:../shared/data/celeba?split=not_mafl --arch hourglass "
        "--epochs 1 --out runs/dve_hg",
    )
    p.add_argument("--data", action="append", metavar="KIND:PATH", help="dataset as KIND:PATH[?...] (repeatable)")
    p.add_argument("--out", default="runs/dve", help="run directory (default runs/dve)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    add_dve_arguments(p)
    p.add_argument("--skip-bad", action="store_true", help="skip bad inputs instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)

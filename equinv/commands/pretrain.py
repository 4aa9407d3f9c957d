"""``equinv pretrain``: MoCo contrastive pretraining (invariant learning), or the DVE baseline with ``--method dve``."""

from __future__ import annotations

import argparse
from pathlib import Path

from equinv.commands.options import (
    ARCH_NAMES,
    DVE_ARCHS,
    SPEC_HELP,
    add_device_arg,
    add_precision_arg,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    probability,
)
from equinv.errors import InputError
from equinv.outputs import check_dir
from equinv.train.presets import PRESETS


def _is_dve_run(run: Path) -> bool:
    """Whether ``run`` is a DVE pretraining run (its config names a DVE architecture)."""
    import json

    cfg = run / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("arch") in DVE_ARCHS


def run(args: argparse.Namespace) -> int:
    """MoCo pretraining (or, with --method dve, the DVE baseline): a fresh run or --resume."""
    from equinv.train.pretrain import PretrainConfig, pretrain

    if args.method == "dve" or (args.resume and _is_dve_run(Path(args.resume))):
        # The DVE baseline (protocol §7) shares this command's data, run-directory and resume options.
        from equinv.commands.pretrain_dve import run as run_dve

        if args.arch is not None and args.arch not in DVE_ARCHS:
            raise InputError(f"--method dve trains {' or '.join(DVE_ARCHS)}, not --arch {args.arch}")
        return run_dve(args)
    if args.arch in DVE_ARCHS:
        raise InputError(f"--arch {args.arch} is a DVE network: add --method dve")
    values = {
        f: getattr(args, f)
        for f in (
            "arch", "head", "dim", "queue", "momentum", "temperature", "batch_size", "lr", "epochs", "max_images",
            "max_minutes", "max_steps", "recipe", "tps", "grayscale", "size", "bn_groups", "query_bn", "seed",
            "precision", "channels_last", "workers", "device", "ckpt_every", "save_every", "log_every", "skip_bad",
            "init", "dense", "dense_dim", "dense_temperature", "dense_points", "dense_aux",
        )
        if getattr(args, f) is not None
    }
    check_dir(args.resume or args.out, "--resume" if args.resume else "--out")
    if args.resume:  # only the options given on the command line: the library applies or refuses them
        if args.preset is not None:
            raise InputError("--preset is fixed when a run starts (its config.json records it): drop it with --resume")
        given = {**values, **({"data": list(args.data)} if args.data else {}), **({"flip": True} if args.flip else {})}
        pretrain(PretrainConfig.resume(args.resume, given), resume=True, progress=not args.quiet)
        return 0
    if not args.data:
        raise InputError("give --data KIND:PATH (repeatable) or --resume RUN_DIR")
    cfg = PretrainConfig.from_preset(args.preset or "paper", data=list(args.data), out=args.out, flip=args.flip,
                                     **values)
    pretrain(cfg, progress=not args.quiet)
    return 0


def _flags(preset: str) -> str:
    """The options a preset sets, as flags (``--head mlp, --temperature 0.2``; a switch alone: ``--dense-aux``)."""
    return ", ".join(f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in PRESETS[preset].items())


def register(sub) -> None:
    """Add ``equinv pretrain``."""
    p = sub.add_parser(
        "pretrain",
        help="MoCo contrastive pretraining on unlabeled images (resumable; torchrun for several processes)",
        description="Invariant learning: MoCo v1 as the reference code (protocol.md §1): momentum 0.999, "
        "queue 4096, T 0.07, SGD lr 0.03 x batch/256, momentum 0.9, wd 1e-4, cosine per epoch, shuffle-BN. "
        "Several processes: torchrun --nproc_per_node N -m equinv pretrain ... (gloo on CPU, nccl on GPU).",
        epilog="Example: equinv pretrain --data celeba:../shared/data/celeba?split=not_mafl --arch resnet18 "
        "--epochs 1 --batch-size 64 --out runs/celeba_r18",
    )
    p.add_argument("--data", action="append", metavar="KIND:PATH", help=SPEC_HELP + " (repeatable)")
    p.add_argument("--out", default="runs/pretrain", help="run directory (default runs/pretrain)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--method", choices=["moco", "dve"], default="moco",
                   help="moco (default): invariant learning; dve: the DVE baseline (Thewlis et al. 2019) on TPS pairs")
    p.add_argument("--arch", choices=[*ARCH_NAMES, *DVE_ARCHS], default=None,
                   help="backbone (default resnet18; with --method dve: hourglass (default) or smallnet)")
    p.add_argument("--init", metavar="WEIGHTS", default=None,
                   help="start from trunk weights: a torchvision state dict (e.g. ImageNet .pth), "
                   "an equinv backbone.safetensors or a MoCo/DDP checkpoint (default: random init)")
    p.add_argument("--preset", choices=list(PRESETS), default=None,
                   help="recipe the other options start from: paper (default; the reference's MoCo v1, used by the "
                   f"paper's tables), small ({_flags('small')}; tried for small data, worse than paper at equinv's CPU "
                   f"budget), dense ({_flags('dense')}: the paper's MoCo plus equinv's equivariance term, the "
                   f"best there) or dense_aux ({_flags('dense_aux')}: dense with DVE's auxiliary step in that term); "
                   "what each gave: docs/pretraining.md. Options given explicitly override it")
    p.add_argument("--head", choices=["linear", "mlp"], default=None, help="projection head (default linear)")
    p.add_argument("--dim", type=positive_int, default=None, help="embedding dimension (default 128)")
    p.add_argument("--queue", type=positive_int, default=None, help="MoCo queue size K (default 4096)")
    p.add_argument("--momentum", type=probability, default=None, help="key encoder momentum (default 0.999)")
    p.add_argument("--temperature", type=positive_float, default=None, help="InfoNCE temperature (default 0.07)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="total batch over all processes (default 256)")
    p.add_argument("--lr", type=nonneg_float, default=None, help="learning rate (default 0.03 x batch/256)")
    p.add_argument("--epochs", type=positive_int, default=None, help="epochs (default 800; the cosine horizon)")
    p.add_argument("--max-images", type=positive_int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--max-minutes", type=nonneg_float, default=None,
                   help="wall-clock budget of this invocation: checkpoint and stop when spent (continue with "
                   "--resume); the weights so far are written to backbone.safetensors")
    p.add_argument("--max-steps", type=positive_int, default=None,
                   help="stop once this many optimisation steps are done in all (a checkpoint; continue with "
                   "--resume and a larger --max-steps); the learning-rate schedule still follows --epochs")
    p.add_argument("--recipe", choices=["auto", "face", "bird"], default=None,
                   help="augmentation recipe (default auto: bird for cub/folder data, else face)")
    p.add_argument("--tps", choices=["paper", "eval", "dve"], default=None, help="add a TPS warp (off by default)")
    p.add_argument("--flip", action="store_true", help="add horizontal flips (off in the reference)")
    p.add_argument("--grayscale", type=probability, default=None, help="grayscale probability (default 0)")
    p.add_argument("--size", type=positive_int, default=None, help="final view size (default 96)")
    p.add_argument("--bn-groups", type=positive_int, default=None,
                   help="shuffle-BN groups of the key batch over all processes (default 4, as 4 GPUs)")
    p.add_argument("--query-bn", choices=["groups", "batch"], default=None,
                   help="BatchNorm of the query batch: in the --bn-groups groups (default; the reference's per-GPU "
                   "BN) or over the whole batch (equinv <= 0.1; docs/parity.md)")
    p.add_argument("--dense", type=nonneg_float, default=None, metavar="W",
                   help="add an equivariance term with weight W beside InfoNCE (equinv's option, not the paper's; "
                   "default 0: off): a 1x1 head over the conv2..conv5 hypercolumn, points tracked through both "
                   "views, the paper's Eq. 3 against the key view's momentum descriptors (docs/pretraining.md)")
    p.add_argument("--dense-dim", type=positive_int, default=None, help="channels of the dense head (default 128)")
    p.add_argument("--dense-temperature", type=positive_float, default=None,
                   help="logit multiplier of the equivariance term (default 7, the reference projector's)")
    p.add_argument("--dense-points", type=positive_int, default=None,
                   help="track a N x N grid of input points through both views (default 16)")
    p.add_argument("--dense-aux", action="store_true", default=None,
                   help="rebuild each tracked point's descriptor from another image of the batch before it is "
                   "scored (DVE's auxiliary image): the term then also asks descriptors to agree across images")
    p.add_argument("--seed", type=nonneg_int, default=None, help="default 0")
    add_precision_arg(p, "the network passes (MoCo, or DVE with --method dve)")
    p.add_argument("--workers", type=nonneg_int, default=None, help="DataLoader worker processes (default 0)")
    add_device_arg(p, "cuda:LOCAL_RANK if available, else cpu")
    p.add_argument("--ckpt-every", type=positive_int, default=None, help="steps between checkpoints (default 200)")
    p.add_argument("--save-every", type=nonneg_int, default=None, help="epochs between kept checkpoints (default 50)")
    p.add_argument("--log-every", type=positive_int, default=None, help="steps between log lines (default 10)")
    p.add_argument("--skip-bad", action="store_true", default=None, help="skip bad inputs instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=run)

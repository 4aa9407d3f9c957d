"""Command line: ``equinv <command> ...``. Thin: parse arguments, then call the library.

Errors in the user's input are printed on one line (``equinv: error: FILE:LINE: ...``) with exit
status 2; no traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equinv import __version__
from equinv.errors import InputError

SPEC_HELP = "dataset as KIND:PATH[?key=value&...]; `equinv data kinds` lists kinds and options"


def add_preprocess_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("preprocessing")
    g.add_argument("--size", type=int, default=96, help="final image side in pixels (default 96)")
    g.add_argument(
        "--context",
        type=float,
        default=None,
        help="canvas side / final side; default: the kind's protocol value (136/96 for faces, 1 for birds)",
    )
    g.add_argument(
        "--crop",
        choices=["celeba", "whole", "box", "landmarks", "300w"],
        default=None,
        help="force one crop rule for all records (default: each dataset's protocol crop)",
    )


def preprocess_from_args(args: argparse.Namespace):
    from equinv.data.preprocess import Preprocess

    try:
        return Preprocess(size=args.size, context=args.context, crop=args.crop)
    except ValueError as e:
        raise InputError(f"bad preprocessing option: {e}") from None


def cmd_data_check(args: argparse.Namespace) -> int:
    from equinv.data.check import check_dataset

    sheet = None if args.no_sheet else Path(args.out)
    rep = check_dataset(
        args.spec,
        sheet=sheet,
        pre=preprocess_from_args(args),
        skip_bad=args.skip_bad,
        n_sheet=args.n_sheet,
        workers=args.workers,
        progress=not args.quiet,
    )
    print("\n".join(rep.lines()))
    if args.skip_report and rep.skipped:
        Path(args.skip_report).write_text("\n".join(rep.skipped) + "\n")
        print(f"skip report    {args.skip_report}")
    return 0


def cmd_data_kinds(args: argparse.Namespace) -> int:
    from equinv.data.spec import describe_kinds

    print("Dataset kinds (use as KIND:PATH[?key=value&...]):")
    print(describe_kinds())
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from equinv.demo import run_demo

    run_demo(Path(args.out), n=args.n, device=args.device, seed=args.seed)
    return 0


DVE_ARCHS = ("smallnet", "hourglass")


def _is_dve_run(run: Path) -> bool:
    import json

    cfg = run / "config.json"
    return cfg.is_file() and json.loads(cfg.read_text()).get("arch") in DVE_ARCHS


def cmd_pretrain(args: argparse.Namespace) -> int:
    from equinv.train.pretrain import PretrainConfig, pretrain

    if args.method == "dve" or (args.resume and _is_dve_run(Path(args.resume))):
        # The DVE baseline (protocol §7) shares this command's data, run-directory and resume options.
        from equinv.commands.dve import cmd_pretrain_dve

        if args.arch is not None and args.arch not in DVE_ARCHS:
            raise InputError(f"--method dve trains {' or '.join(DVE_ARCHS)}, not --arch {args.arch}")
        return cmd_pretrain_dve(args)
    if args.arch in DVE_ARCHS:
        raise InputError(f"--arch {args.arch} is a DVE network: add --method dve")
    values = {
        f: getattr(args, f)
        for f in (
            "arch", "head", "dim", "queue", "momentum", "temperature", "batch_size", "lr", "epochs",
            "max_images", "max_minutes", "recipe", "tps", "grayscale", "size", "bn_groups", "seed", "workers", "device",
            "ckpt_every", "save_every", "log_every", "skip_bad", "init",
        )
        if getattr(args, f) is not None
    }
    if args.resume:  # only the options given on the command line: the library applies or refuses them
        given = {**values, **({"data": list(args.data)} if args.data else {}), **({"flip": True} if args.flip else {})}
        pretrain(PretrainConfig.resume(args.resume, given), resume=True, progress=not args.quiet)
        return 0
    if not args.data:
        raise InputError("give --data KIND:PATH (repeatable) or --resume RUN_DIR")
    cfg = PretrainConfig(data=list(args.data), out=args.out, flip=args.flip, **values)
    pretrain(cfg, progress=not args.quiet)
    return 0


def add_pretrain_parser(sub) -> None:
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
    p.add_argument("--arch", choices=["resnet18", "resnet34", "resnet50", "resnet50_half", *DVE_ARCHS], default=None,
                   help="backbone (default resnet18; with --method dve: hourglass (default) or smallnet)")
    p.add_argument("--init", metavar="WEIGHTS", default=None,
                   help="start from trunk weights: a torchvision state dict (e.g. ImageNet .pth), "
                   "an equinv backbone.safetensors or a MoCo/DDP checkpoint (default: random init)")
    p.add_argument("--head", choices=["linear", "mlp"], default=None, help="projection head (default linear)")
    p.add_argument("--dim", type=int, default=None, help="embedding dimension (default 128)")
    p.add_argument("--queue", type=int, default=None, help="MoCo queue size K (default 4096)")
    p.add_argument("--momentum", type=float, default=None, help="key encoder momentum (default 0.999)")
    p.add_argument("--temperature", type=float, default=None, help="InfoNCE temperature (default 0.07)")
    p.add_argument("--batch-size", type=int, default=None, help="total batch over all processes (default 256)")
    p.add_argument("--lr", type=float, default=None, help="learning rate (default 0.03 x batch/256)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default 800; the cosine horizon)")
    p.add_argument("--max-images", type=int, default=None, help="train on a seeded subset of this many images")
    p.add_argument("--max-minutes", type=float, default=None,
                   help="wall-clock budget of this invocation: checkpoint and stop when spent (continue with "
                   "--resume); the weights so far are written to backbone.safetensors")
    p.add_argument("--recipe", choices=["auto", "face", "bird"], default=None,
                   help="augmentation recipe (default auto: bird for cub/folder data, else face)")
    p.add_argument("--tps", choices=["paper", "eval", "dve"], default=None, help="add a TPS warp (off by default)")
    p.add_argument("--flip", action="store_true", help="add horizontal flips (off in the reference)")
    p.add_argument("--grayscale", type=float, default=None, help="grayscale probability (default 0)")
    p.add_argument("--size", type=int, default=None, help="final view size (default 96)")
    p.add_argument("--bn-groups", type=int, default=None,
                   help="shuffle-BN groups of the key batch over all processes (default 4, as 4 GPUs)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--workers", type=int, default=None, help="DataLoader worker processes (default 0)")
    p.add_argument("--device", default=None, help="torch device (default: cuda:LOCAL_RANK if available, else cpu)")
    p.add_argument("--ckpt-every", type=int, default=None, help="steps between checkpoints (default 200)")
    p.add_argument("--save-every", type=int, default=None, help="epochs between kept checkpoints (default 50)")
    p.add_argument("--log-every", type=int, default=None, help="steps between log lines (default 10)")
    p.add_argument("--skip-bad", action="store_true", default=None, help="skip bad inputs instead of stopping")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_pretrain)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="equinv",
        description="Learn object-landmark representations from unlabeled images (Cheng, Su & Maji, ICCV 2021).",
    )
    p.add_argument("--version", action="version", version=f"equinv {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    d = sub.add_parser(
        "demo",
        help="run the main job on the built-in synthetic data",
        description="Generate the built-in synthetic dataset, preprocess and cache it, augment a batch "
        "on the device with landmarks (crop, colour, JPEG, TPS, flip) and write figures.",
    )
    d.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    d.add_argument("--n", type=int, default=256, help="number of synthetic images (default 256)")
    d.add_argument("--device", default=None, help="torch device (default: cuda if available, else cpu)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(fn=cmd_demo)

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
    c.add_argument("--n-sheet", type=int, default=32, help="samples on the sheet (default 32)")
    c.add_argument("--skip-bad", action="store_true", help="skip bad inputs (counted and listed) instead of stopping")
    c.add_argument("--skip-report", default=None, help="write the list of skipped inputs to this file")
    c.add_argument("--workers", type=int, default=2, help="decoding threads (default 2)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    add_preprocess_args(c)
    c.set_defaults(fn=cmd_data_check)
    k = dsub.add_parser("kinds", help="list dataset kinds and their options")
    k.set_defaults(fn=cmd_data_kinds)
    add_pretrain_parser(sub)
    _register_commands(sub)
    return p


def _register_commands(sub) -> None:
    """Add every ``equinv.commands.<name>.register(sub)`` (features, project, match, parts, ...)."""
    import importlib
    import pkgutil

    import equinv.commands

    for info in sorted(pkgutil.iter_modules(equinv.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"equinv.commands.{info.name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)


def main(argv: list[str] | None = None) -> int:
    from equinv.runtime import tune_allocator

    tune_allocator()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.fn(args) or 0)
    except InputError as e:
        print(f"equinv: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("equinv: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())

"""Short projector runs that choose how the 256-D projection is trained (issue 18, target 5), on validation only.

    python experiments/projector_sweep.py --backbone runs/repro/cpu/faces_dense/pretrain \
        [--variants reference,reference_linear,dve_softmax,dve] [--epochs 3] [--out runs/projector_sweep]

Each variant is one ``equinv project`` command on the frozen hypercolumn of ``--backbone``, with the CPU plan's
projector settings (``faces_dense_project_d256``: 256-D, 3,000 of the CelebA pretraining faces, matching on 250
same- and 250 different-identity pairs of CelebA mafl_train after every epoch) plus the variant's flags, for
``--epochs`` epochs (the cosine horizon, so every variant finishes its schedule). Nothing here reads a test split.
Every command is printed before it runs; a variant whose run finished is not rerun. One markdown row per variant:
its flags, the seconds of an epoch's training, and the matching errors (70-px frame) of its best epoch (lowest
different-identity error, the epoch ``best.safetensors`` keeps).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

#: ``equinv project`` flags of each variant, beside the plan's (reference mode: softmax projector, one view)
VARIANTS: dict[str, list[str]] = {
    "reference": [],
    # the reference loss on a linear projector: separates the projector's form from the loss
    "reference_linear": ["--projector", "linear"],
    # DVE's pairs and loss through an auxiliary face, on the reference's softmax projector
    "dve_softmax": ["--mode", "dve", "--projector", "softmax"],
    # ... on a linear projector (--mode dve's default)
    "dve": ["--mode", "dve"],
    "dve_t50": ["--mode", "dve", "--temperature", "50"],
    "dve_grid32": ["--mode", "dve", "--train-size", "32"],
}
DATA = "celeba:../shared/data/celeba?split=not_mafl&holdout=1000&part=train"
VAL = "celeba:../shared/data/celeba?split=mafl_train"


def command(backbone: str, out: Path, epochs: int, flags: list[str]) -> list[str]:
    """The ``equinv project`` command of one variant."""
    return [sys.executable, "-m", "equinv", "project", "--backbone", backbone, "--arch", "resnet18", "--dim", "256",
            "--data", DATA, "--val", VAL, "--val-pairs", "250", "--epochs", str(epochs), "--max-images", "3000",
            "--out", str(out), "--quiet", *flags]


def row(name: str, run: Path) -> str:
    """A markdown row: flags, mean training seconds per epoch, the best epoch's matching errors."""
    epochs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if '"val"' in ln]
    best = min(epochs, key=lambda e: e["val"]["match_error_diff"])
    timed = epochs[1:] or epochs  # epoch 1 also decodes the images
    train_s = sum(e["train_s"] for e in timed) / len(timed)
    return (f"| {name} | `{' '.join(VARIANTS.get(name, [])) or '(plan)'}` | {train_s:.0f} | {best['epoch']} of "
            f"{len(epochs)} | {best['val']['match_error_same']:.2f} | {best['val']['match_error_diff']:.2f} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="pretraining run directory (e.g. the dense preset's)")
    ap.add_argument("--variants", default="reference,reference_linear,dve_softmax,dve",
                    help=f"comma-separated, from: {', '.join(VARIANTS)}")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--out", default="runs/projector_sweep")
    args = ap.parse_args(argv)
    names = [v for v in args.variants.split(",") if v]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        ap.error(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    rows = []
    for name in names:
        run = Path(args.out) / f"{name}_e{args.epochs}"
        log = run / "log.jsonl"
        if not log.is_file() or sum('"val"' in ln for ln in log.read_text().splitlines()) < args.epochs:
            cmd = command(args.backbone, run, args.epochs, VARIANTS[name])
            if (run / "checkpoints" / "last.safetensors").is_file():
                cmd = [sys.executable, "-m", "equinv", "project", "--resume", str(run), "--quiet"]
            print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
            subprocess.run(cmd, check=True)
        rows.append(row(name, run))
    print("\n| variant | flags | train s / epoch | best epoch | match same | match diff |\n|---|---|---|---|---|---|")
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

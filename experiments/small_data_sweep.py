"""Short MoCo runs that choose the small-data preset (issue 18, item 3), on validation splits only.

    python experiments/small_data_sweep.py [--variants paper,v2,v2_small] [--epochs 5] [--out runs/sweep]

Each variant pretrains a ResNet18 with MoCo on the 7,075 CelebA faces of the CPU plan (``faces_pretrain``'s
data) for ``--epochs`` epochs (the cosine horizon: every variant finishes its schedule), then is scored the way
the preset is chosen, never on a test split:

* MTFL val IOD %: a regressor with the CPU plan's short-run settings (multiplier 3, lr 3e-2, 8 epochs) on the
  first 1,000 faces of ``mtfl?holdout=1000&part=train``, epoch kept and scored on 300 faces of the held-out
  ``part=val`` (``eval regress`` prints both; the last epoch's number is what we compare);
* CelebA mafl_train matching: hypercolumn nearest-neighbour error, 250 same- and 250 different-identity pairs.

``--variants random`` scores the random-init network with the same two commands (no pretraining). Every
command is an ordinary ``equinv`` call, printed before it runs; a variant whose outputs exist is not rerun. One
markdown row per variant: wall-clock, images/s, the last logged InfoNCE loss / top-1, val IOD, matching.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

#: pretrain flags of each variant, beside the paper recipe's defaults (linear head, T 0.07, K 4096, lr 0.03, b 256)
VARIANTS: dict[str, list[str]] = {
    "paper": [],
    # MoCo v2's head and temperature (Chen et al. 2020): MLP projection, T = 0.2
    "v2": ["--head", "mlp", "--temperature", "0.2"],
    # + half the batch (twice the updates in the same wall-clock) and a queue of 1,024 (14 % of the images)
    "v2_small": ["--head", "mlp", "--temperature", "0.2", "--batch-size", "128", "--queue", "1024"],
    # + a doubled learning rate on top of v2_small
    "v2_small_lr": ["--head", "mlp", "--temperature", "0.2", "--batch-size", "128", "--queue", "1024",
                    "--lr", "0.06"],
}


def _run(cmd: list[str], log: Path) -> float:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.time() - t


def _last_log(run: Path) -> dict:
    lines = (run / "log.jsonl").read_text().splitlines()
    return json.loads(lines[-1]) if lines else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="paper,v2,v2_small")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--root", default="../shared/data")
    ap.add_argument("--out", default="runs/sweep")
    args = ap.parse_args()
    eq = [sys.executable, "-m", "equinv"]
    root, out = args.root, Path(args.out)
    pre = f"celeba:{root}/celeba?split=not_mafl&holdout=1000&part=train"
    rows = []
    for name in args.variants.split(","):
        d = out / f"{name}_e{args.epochs}" if name != "random" else out / "random"
        d.mkdir(parents=True, exist_ok=True)
        rec = {"variant": name, "flags": VARIANTS.get(name, [])}
        if name != "random":
            run = d / "pretrain"
            if not (run / "backbone.safetensors").exists():
                rec["pretrain_s"] = _run(eq + ["pretrain", "--data", pre, "--arch", "resnet18", "--epochs",
                                               str(args.epochs), "--out", str(run), "--quiet"] + VARIANTS[name],
                                         d / "pretrain.log")
            rec["last_step"] = _last_log(run)
            backbone = str(run)
        else:
            backbone = "random"
        if not (d / "regress" / "regression.json").exists():
            _run(eq + ["eval", "regress", "--backbone", backbone, "--arch", "resnet18",
                       "--train", f"mtfl:{root}/mtfl?holdout=1000&part=train&limit=1000",
                       "--val", f"mtfl:{root}/mtfl?holdout=1000&part=val&limit=300",
                       "--test", f"mtfl:{root}/mtfl?holdout=1000&part=val&limit=300", "--epochs", "8",
                       "--softargmax-mul", "3", "--lr", "3e-2", "--cache-dir", str(out / "cache"),
                       "--out", str(d / "regress"), "--quiet"], d / "regress.log")
        if not (d / "match" / "match.json").exists():
            _run(eq + ["eval", "match", "--backbone", backbone, "--arch", "resnet18",
                       "--data", f"celeba:{root}/celeba?split=mafl_train", "--pairs", "250",
                       "--out", str(d / "match"), "--quiet"], d / "match.log")
        rec["regression"] = json.loads((d / "regress" / "regression.json").read_text())
        rec["match"] = json.loads((d / "match" / "match.json").read_text())
        (d / "sweep.json").write_text(json.dumps(rec, indent=1))
        rows.append(rec)
        print(json.dumps({k: rec[k] for k in ("variant", "flags")}), flush=True)


if __name__ == "__main__":
    main()

"""Short MoCo runs that choose the small-data preset (issue 18, item 3), on validation splits only.

    python experiments/small_data_sweep.py [--variants random,paper,v2_small] [--epochs 5] [--out runs/sweep]
    python experiments/small_data_sweep.py --gap RUN [RUN ...]   # how far a MoCo run's InfoNCE task went

Each variant pretrains a ResNet18 with MoCo on the 7,075 CelebA faces of the CPU plan (``faces_pretrain``'s
data) for ``--epochs`` epochs (the cosine horizon: every variant finishes its schedule), then is scored the way
the preset is chosen, never on a test split:

* MTFL val IOD %: a regressor with the CPU plan's short-run settings (multiplier 3, lr 3e-2, 8 epochs) on the
  first 1,000 faces of ``mtfl?holdout=1000&part=train``, epoch kept and scored on 300 faces of the held-out
  ``part=val`` (``eval regress`` prints both; the last epoch's number is what we compare);
* CelebA mafl_train matching: hypercolumn nearest-neighbour error, 250 same- and 250 different-identity pairs.

``--variants random`` scores the random-init network with the same two commands (no pretraining). Every
command is an ordinary ``equinv`` call, printed before it runs; a variant whose outputs exist is not rerun. One
markdown row per variant: the mean images/s, the last logged InfoNCE loss and positive − negative
similarity, val IOD (also with ``--input-scale std`` where ``VARIANT/regress_std`` was run by hand with the
same command plus that flag), the mean training shape's val IOD, matching.
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
    # the paper recipe + equinv's equivariance term (--dense 1: Eq. 3 on tracked points, beside InfoNCE)
    "dense": ["--dense", "1"],
    # ... with sharper correspondences (logit multiplier 20 instead of the reference projector's 7)
    "dense_t20": ["--dense", "1", "--dense-temperature", "20"],
    # ... each point's descriptor first rebuilt from another face of the batch (DVE's auxiliary image)
    "dense_aux": ["--dense", "1", "--dense-temperature", "20", "--dense-aux"],
}


def _run(cmd: list[str], log: Path) -> float:
    print("$", " ".join(shlex.quote(c) for c in cmd), flush=True)
    t = time.time()
    with open(log, "w") as f:
        subprocess.run(cmd, check=True, stdout=f, stderr=subprocess.STDOUT)
    return time.time() - t


def _last_log(run: Path) -> dict:
    """The last logged step, with ``img_per_s`` replaced by the mean over every logged step."""
    logs = [json.loads(ln) for ln in (run / "log.jsonl").read_text().splitlines() if ln.strip()]
    return {**logs[-1], "img_per_s": sum(r["img_per_s"] for r in logs) / len(logs)} if logs else {}


def _variant_dir(out: Path, name: str, epochs: int) -> Path:
    return out / name if name == "random" else out / f"{name}_e{epochs}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variants", default="random,paper,v2_small")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--root", default="../shared/data")
    ap.add_argument("--out", default="runs/sweep")
    ap.add_argument("--gap", nargs="+", metavar="RUN",
                    help="only print, per MoCo run directory, the mean positive − negative similarity of its last 10 "
                    "logged steps (log.jsonl)")
    args = ap.parse_args()
    if args.gap:
        for run in args.gap:
            logs = [json.loads(ln) for ln in (Path(run) / "log.jsonl").read_text().splitlines() if ln.strip()][-10:]
            gap = sum(r["pos_sim"] - r["neg_sim"] for r in logs) / len(logs)
            print(f"{run}: positive − negative similarity {gap:.2f} (mean of its last {len(logs)} logged steps)")
        return
    eq = [sys.executable, "-m", "equinv"]
    root, out = args.root, Path(args.out)
    pre = f"celeba:{root}/celeba?split=not_mafl&holdout=1000&part=train"
    rows = []
    for name in args.variants.split(","):
        d = _variant_dir(out, name, args.epochs)
        d.mkdir(parents=True, exist_ok=True)
        rec = {"variant": name, "flags": VARIANTS.get(name, [])}
        if name != "random":
            run = d / "pretrain"
            if not (run / "backbone.safetensors").exists():
                _run(eq + ["pretrain", "--data", pre, "--arch", "resnet18", "--epochs",
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
    print("| variant | flags | mean img/s | last loss | last pos − neg sim | val IOD % | val IOD %, --input-scale std "
          "| mean shape IOD % | match same | match diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        last, reg = r.get("last_step", {}), r["regression"]
        t = next(iter(reg["runs"][0]["tests"].values()))
        std = _variant_dir(out, r["variant"], args.epochs) / "regress_std"
        std_iod = json.loads((std / "regression.json").read_text())["iod_error_percent"] \
            if (std / "regression.json").exists() else None
        cells = [r["variant"], " ".join(r["flags"]) or "–",
                 f"{last['img_per_s']:.1f}" if last else "–", f"{last['loss']:.3f}" if last else "–",
                 f"{last['pos_sim'] - last['neg_sim']:.3f}" if last else "–", f"{t['iod_error_percent']:.2f}",
                 f"{std_iod:.2f}" if std_iod is not None else "–", f"{t['mean_shape_iod_error_percent']:.2f}",
                 f"{r['match']['match_error_same']:.2f}", f"{r['match']['match_error_diff']:.2f}"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()

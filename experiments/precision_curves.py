"""Does bf16 MoCo track fp32? Loss and similarity curves of the same run at both precisions, against seed noise.

    python experiments/precision_curves.py RUNS_DIR [--steps N] [--out docs/precision_curves.png]

``RUNS_DIR`` holds three ``equinv pretrain`` runs made by the commands in docs/precision.md: ``fp32_s0`` and
``bf16_s0`` (same seed, so the same images, views and shuffles at every step: they differ only by the
arithmetic) and ``fp32_s1`` (another seed: the run-to-run noise a precision difference is to be judged
against). It prints, over the first N logged steps, the mean absolute difference per step of the InfoNCE
loss, the positive and the negative similarity between bf16 and fp32 (same seed) and between the two fp32
seeds, and the mean of each curve over the last quarter of the steps; and draws the three loss curves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

KEYS = ("loss", "pos_sim", "neg_sim")


def read_log(run: Path, steps: int) -> dict[str, np.ndarray]:
    """The per-step figures of ``run/log.jsonl`` for steps 1..``steps`` (fewer when the run has fewer)."""
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["step"] <= steps]
    return {k: np.array([r[k] for r in rows], dtype=np.float64) for k in (*KEYS, "img_per_s")}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", type=Path)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--out", type=Path, default=None, help="figure of the loss curves (PNG)")
    a = p.parse_args()
    logs = {name: read_log(a.runs / name, a.steps) for name in ("fp32_s0", "bf16_s0", "fp32_s1")}
    n = min(len(v["loss"]) for v in logs.values())
    q = max(1, n // 4)
    print(f"{n} steps compared")
    print("| figure | mean abs diff bf16 vs fp32 (seed 0) | mean abs diff fp32 seed 1 vs seed 0 | "
          "fp32 s0, last quarter | bf16 s0, last quarter | fp32 s1, last quarter |")
    print("|---|---:|---:|---:|---:|---:|")
    for k in KEYS:
        a32, b16, s1 = (logs[r][k][:n] for r in ("fp32_s0", "bf16_s0", "fp32_s1"))
        print(f"| {k} | {np.abs(b16 - a32).mean():.4f} | {np.abs(s1 - a32).mean():.4f} | {a32[-q:].mean():.4f} | "
              f"{b16[-q:].mean():.4f} | {s1[-q:].mean():.4f} |")
    for r, v in logs.items():
        print(f"{r}: median {np.median(v['img_per_s'][1:n]):.1f} img/s")
    if a.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(7, 3.5))
        for r, style in (("fp32_s0", "-"), ("bf16_s0", "--"), ("fp32_s1", ":")):
            ax.plot(np.arange(1, n + 1), logs[r]["loss"][:n], style, label=r)
        ax.set_xlabel("step")
        ax.set_ylabel("InfoNCE loss")
        ax.legend()
        ax.set_title("MoCo ResNet18, CelebA, batch 64: bf16 vs fp32 (same seed) and another fp32 seed")
        fig.tight_layout()
        fig.savefig(a.out, dpi=100)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

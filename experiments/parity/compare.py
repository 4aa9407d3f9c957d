"""Side-by-side training curves and downstream numbers of the reference and equinv MoCo runs.

    python experiments/parity/compare.py --run reference=/work/runs/parity/ref \\
        --run equinv=/work/runs/parity/equinv_g1 --steps 75 \\
        --downstream reference=/work/runs/parity/down/ref --downstream equinv=/work/runs/parity/down/equinv \\
        --downstream random=/work/runs/parity/down/random \\
        --figure docs/parity_curves.png --out experiments/parity/results

Reads each run's ``log.jsonl`` (equinv's own, or the one ``run_reference.py`` writes with the same fields),
keeps steps 1..``--steps``, and writes

- ``OUT/curves.csv``: per step, loss / positive and negative similarity / top-1 / lr of every run;
- ``OUT/summary.json``: per window of steps, each run's mean, and for the first run against each other
  one the mean paired difference (its standard error too, but that treats steps as independent, which
  they are not: the network state carries over, so it understates run-to-run noise; compare a second
  seed of the same code instead);
- ``--figure``: the four curves (raw and a running mean);
- the same table as Markdown on stdout, with the downstream numbers (``regress/regression.json``: IOD %
  on the validation and test parts; ``match/match.json``: same / different-identity matching error).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

METRICS = ("loss", "pos_sim", "neg_sim", "acc")
LABELS = {"loss": "InfoNCE loss", "pos_sim": "positive similarity q·k+", "neg_sim": "negative similarity q·queue",
          "acc": "top-1 (positive ranked first)"}


def read_log(run: Path, steps: int) -> dict[int, dict]:
    rows = {}
    for line in (run / "log.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r["step"] <= steps:
            rows[r["step"]] = r
    return rows


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of ``b − a`` and its standard error."""
    d = [y - x for x, y in zip(a, b, strict=True)]
    m = mean(d)
    se = math.sqrt(sum((v - m) ** 2 for v in d) / (len(d) - 1) / len(d)) if len(d) > 1 else float("nan")
    return {"mean_diff": m, "se": se}


def windows(steps: int, width: int) -> list[tuple[int, int]]:
    return [(s, min(s + width - 1, steps)) for s in range(1, steps + 1, width)]


def downstream(path: Path) -> dict:
    out: dict = {}
    reg = path / "regress" / "regression.json"
    if reg.is_file():
        r = json.loads(reg.read_text())
        rep = r["runs"][0]["per_repeat"][0]
        out["tests"] = {spec: {"iod": t["iod_error_percent"], "pck": t["pck"],
                               "mean_shape_iod": t.get("mean_shape_iod_error_percent")}
                        for spec, t in rep["tests"].items()}
        out["selected_epoch"] = rep["selected_epoch"]
    mat = path / "match" / "match.json"
    if mat.is_file():
        m = json.loads(mat.read_text())
        out["match_same"], out["match_diff"], out["pairs"] = m["match_error_same"], m["match_error_diff"], m["n_pairs"]
    return out


def plot(curves: dict[str, dict[int, dict]], steps: int, path: Path, smooth: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 4, figsize=(14, 3.2), dpi=90)
    colours = ["tab:blue", "tab:orange", "tab:green", "tab:red"]
    for ax, key in zip(axes, METRICS, strict=True):
        for (name, rows), c in zip(curves.items(), colours, strict=False):
            xs = sorted(rows)
            ys = [rows[s][key] for s in xs]
            ax.plot(xs, ys, color=c, alpha=0.3, lw=0.8)
            run = [mean(ys[i - smooth + 1 : i + 1]) for i in range(smooth - 1, len(ys))]
            ax.plot(xs[smooth - 1 :], run, color=c, lw=1.6, label=name)
        ax.set_title(LABELS[key], fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.set_xlim(1, steps)
        ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"MoCo ResNet18, CelebA, batch 64: faint = per step, bold = mean of the last {smooth} steps",
                 fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (first one is the baseline)")
    p.add_argument("--steps", type=int, required=True)
    p.add_argument("--window", type=int, default=25)
    p.add_argument("--smooth", type=int, default=10)
    p.add_argument("--downstream", action="append", default=[], help="NAME=DIR with regress/ and match/")
    p.add_argument("--figure", required=True)
    p.add_argument("--out", required=True)
    a = p.parse_args()

    curves = {}
    for item in a.run:
        name, _, path = item.partition("=")
        rows = read_log(Path(path), a.steps)
        have = max(rows, default=0)
        if have < 2 or [s for s in range(1, have + 1) if s not in rows]:
            raise SystemExit(f"{path}/log.jsonl: steps 1..{have} are not all there")
        curves[name] = rows  # a run may stop early: windows and differences use the steps it has
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curves.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["step"] + [f"{n}_{k}" for n in curves for k in (*METRICS, "lr")])
        for s in range(1, a.steps + 1):
            w.writerow([s] + [f"{curves[n][s][k]:.6g}" if s in curves[n] else "" for n in curves
                              for k in (*METRICS, "lr")])

    names = list(curves)
    base = names[0]
    summary: dict = {"steps": a.steps, "runs": names, "windows": []}
    for lo, hi in windows(a.steps, a.window):
        win: dict = {"steps": [lo, hi]}
        for k in METRICS:
            vals = {n: [curves[n][s][k] for s in range(lo, hi + 1) if s in curves[n]] for n in names}
            win[k] = {n: mean(v) if len(v) == hi - lo + 1 else None for n, v in vals.items()}
            win[k]["diff_vs_" + base] = {n: paired(vals[base], vals[n]) if win[k][n] is not None else None
                                         for n in names[1:]}
        summary["windows"].append(win)
    summary["downstream"] = {}
    for item in a.downstream:
        name, _, path = item.partition("=")
        summary["downstream"][name] = downstream(Path(path))
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    plot(curves, a.steps, Path(a.figure), a.smooth)

    print("| steps | metric | " + " | ".join(names) + " | " + " | ".join(f"{n} − {base}" for n in names[1:]) + " |")
    print("|---|---|" + "---|" * (2 * len(names) - 1))
    for win in summary["windows"]:
        lo, hi = win["steps"]
        for k in METRICS:
            cells = [f"{win[k][n]:.3f}" if win[k][n] is not None else "–" for n in names]
            diffs = win[k]["diff_vs_" + base].values()
            cells += [f"{d['mean_diff']:+.3f}" if d else "–" for d in diffs]
            print(f"| {lo}–{hi} | {k} | " + " | ".join(cells) + " |")
    if summary["downstream"]:
        print()
        print("| backbone | test set | IOD % | PCK@0.05 % | mean shape IOD % | epoch (best val) | match same | "
              "match diff | pairs |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, d in summary["downstream"].items():
            spec, t = next(iter(d.get("tests", {}).items()), ("–", {}))
            cells = [spec.split("?")[0], f"{t['iod']:.2f}" if t else "–", f"{t['pck']:.2f}" if t else "–",
                     f"{t['mean_shape_iod']:.2f}" if t and t["mean_shape_iod"] is not None else "–",
                     str(d.get("selected_epoch", "–")),
                     f"{d['match_same']:.2f}" if "match_same" in d else "–",
                     f"{d['match_diff']:.2f}" if "match_diff" in d else "–", str(d.get("pairs", "–"))]
            print(f"| {name} | " + " | ".join(cells) + " |")
    print(f"wrote {out / 'curves.csv'}, {out / 'summary.json'}, {a.figure}")


if __name__ == "__main__":
    main()

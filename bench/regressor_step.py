"""Landmark-regressor step cost: fit's head (16 heat-maps per landmark on 32²) against eval regress's (50 on 48²).

    python bench/regressor_step.py [--batch 32] [--steps 10]

Random ResNet18 hypercolumn maps of 96-px views (64×24², 128×12², 256×6², 512×3², what the feature cache holds),
5 landmarks, one Adam step of the protocol loss (:func:`equinv.evaluate.regressor_fit.regressor_step`); the median
over ``--steps`` after a warm-up, and what 600 steps (``equinv fit``'s default) cost at that rate. Printed, never
asserted; the load average is printed beside it, since a busy machine slows every row alike.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from equinv.evaluate.regressor_fit import regressor_step
from equinv.models.regressor import KeypointRegressor

SHAPES = ((64, 24), (128, 12), (256, 6), (512, 3))
HEADS = ((48, 50, "eval regress"), (32, 16, "equinv fit"), (32, 50, ""), (48, 16, ""), (24, 16, ""))


def _ms(grid: int, n_heatmaps: int, batch: int, steps: int) -> float:
    g = torch.Generator().manual_seed(0)
    maps = [torch.randn(batch, c, s, s, generator=g) for c, s in SHAPES]
    gt, vis = torch.rand(batch, 5, 2, generator=g) * 2 - 1, torch.ones(batch, 5, dtype=torch.bool)
    reg = KeypointRegressor([c for c, _ in SHAPES], 5, n_heatmaps, 3.0, 0.05)
    opt = torch.optim.Adam(reg.parameters(), 1e-3)
    regressor_step(reg, opt, maps, gt, vis, grid)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        regressor_step(reg, opt, maps, gt, vis, grid)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()}")
    print("| grid | heat-maps per landmark | used by | ms / step | 600 steps, s |")
    print("|---:|---:|---|---:|---:|")
    for grid, nh, who in HEADS:
        ms = _ms(grid, nh, a.batch, a.steps)
        print(f"| {grid} | {nh} | {who} | {ms:.0f} | {0.6 * ms:.0f} |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()

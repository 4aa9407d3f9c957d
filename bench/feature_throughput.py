"""Frozen-feature extraction throughput per compute mode: fp32, fp32 + channels-last, bf16 (printed, never asserted).

For each architecture, the hypercolumn source's forward pass (``build_source(FeatureSpec(...)).maps``, what
``eval``, ``fit``, ``match`` and ``predict`` run) on random ``(B, 3, S, S)`` batches, after two warm-up calls,
in each mode of :mod:`equinv.precision`; and the largest difference of its maps from fp32's (relative to the
maps' scale), to show what the mode changes.

    python bench/feature_throughput.py --archs resnet18,resnet50 --batch 32 --reps 4
"""

from __future__ import annotations

import argparse
import time

import torch

from equinv import precision as P
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec

MODES = {"fp32": ("fp32", False), "fp32+cl": ("fp32", True), "bf16": ("bf16", False)}


def rate(source, x: torch.Tensor, reps: int) -> tuple[float, list[torch.Tensor]]:
    """img/s of ``source.maps`` on ``x`` and its maps."""
    with torch.no_grad():
        for _ in range(2):
            maps = source.maps(x)
        t0 = time.perf_counter()
        for _ in range(reps):
            maps = source.maps(x)
    return x.shape[0] * reps / (time.perf_counter() - t0), maps


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--modes", default="fp32,fp32+cl,bf16")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--reps", type=int, default=4)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    a = p.parse_args()
    dev = torch.device(a.device)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, capability "
          f"{torch.backends.cpu.get_cpu_capability()}, device {dev}, native bf16 {P.native_bf16(dev)}; "
          f"batch {a.batch} at {a.size} px")
    print("| arch | mode | img/s | x fp32 | max abs diff / max abs (vs fp32) |")
    print("|---|---|---:|---:|---:|")
    x = torch.randn(a.batch, 3, a.size, a.size, device=dev)
    for arch in a.archs.split(","):
        ref = None
        for mode in a.modes.split(","):
            prec, cl = MODES[mode]
            src = build_source(FeatureSpec(arch=arch, precision=prec, channels_last=cl), dev)
            r, maps = rate(src, x, a.reps)
            if ref is None:
                ref = (r, maps)
            diff = max(float((m - m0).abs().max() / m0.abs().max()) for m, m0 in zip(maps, ref[1], strict=True))
            print(f"| {arch} | {mode} | {r:.1f} | {r / ref[0]:.2f} | {diff:.1e} |", flush=True)


if __name__ == "__main__":
    main()

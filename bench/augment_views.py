"""Cost of one MoCo view (``make_view``) per batch: face_moco and bird_moco, with and without TPS.

Real images: the ``synthetic:N`` faces cached as 136² uint8 canvases (birds: the same images cached at
96², the bird canvas). Prints the best of ``--repeat`` timings (ms per view, whole batch) per recipe.

    EQUINV_CACHE=/tmp/eqcache python bench/augment_views.py
    EQUINV_CACHE=/tmp/eqcache python bench/augment_views.py --device cuda --repeat 10
"""

from __future__ import annotations

import argparse
import time

import torch

from equinv.augment import recipes as R
from equinv.data.dataset import LandmarkDataset
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index


def load(data: str, pre: Preprocess, batch: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    ds = LandmarkDataset(read_index(data), pre)
    ds.prepare(progress=False)
    idx = [i % len(ds) for i in range(batch)]
    b = ds.__getitems__(idx)
    return b["image"], b["landmarks"].float(), b["visible"]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_view(x, lm, vis, cfg, device, repeat: int) -> float:
    g = torch.Generator().manual_seed(0)
    R.make_view(x, lm, vis, cfg, g)  # warm-up
    sync(device)
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        R.make_view(x, lm, vis, cfg, g)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return best * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic:256")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeat", type=int, default=3, help="timed calls per recipe; the best is reported")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--device", default="cpu")
    p.add_argument("--recipes", default="face_moco,face_moco+tps,bird_moco,bird_moco+tps")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    face = load(args.data, Preprocess(size=96), args.batch)
    bird = load(args.data, Preprocess(size=96, context=1.0), args.batch)
    cpu = f"CPU, {torch.get_num_threads()} threads"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"make_view at batch {args.batch} on {where}; {args.data}; best of {args.repeat} (ms per view)")
    for name in args.recipes.split(","):
        base, _, extra = name.partition("+")
        cfg = R.PRESETS[base](**({"tps": "paper"} if extra == "tps" else {}))
        x, lm, vis = face if base == "face_moco" else bird
        ms = time_view(x.to(device), lm.to(device), vis.to(device), cfg, device, args.repeat)
        rate = args.batch / ms * 1e3
        print(f"{name:16s} canvas {tuple(x.shape[1:])} -> {cfg.final}²: {ms:8.1f} ms  ({rate:7.0f} img/s)")


if __name__ == "__main__":
    main()

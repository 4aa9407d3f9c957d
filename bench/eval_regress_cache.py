"""`eval regress` with the feature cache vs recomputing the frozen backbone every epoch (the reference's way).

Same data, same frozen trunk, same regressor initialisation, optimiser and schedule in both paths:

- cached (as :func:`equinv.evaluate.regression.run_regression` does it): every image goes through the
  trunk once (:func:`~equinv.features.cache.extract_features`, fp16 per-layer native maps in memory),
  then :func:`~equinv.evaluate.regressor_fit.train_regressor` runs E epochs on the cached maps;
- recompute (the reference): every epoch, every batch of images is read, centre-cropped, normalised and
  passed through the frozen trunk (eval mode, no grad), then the same regressor step (Adam β1 0.5, cosine
  schedule stepped at the start of each epoch, ``smooth_l1(10·pred, 10·gt)``).

It prints the extraction time, the per-epoch times of both paths (mean over the E epochs), the totals, the
measured speed-up, the speed-up projected to the protocol's 120 epochs
(``120 · epoch_recompute / (extraction + 120 · epoch_cached)``), and the size of the fp16 cache. Times are
wall-clock seconds of one run; nothing is asserted about them.

    python bench/eval_regress_cache.py                                  # synthetic:512?size=96, resnet18, 3 epochs
    python bench/eval_regress_cache.py --arch resnet50
    python bench/eval_regress_cache.py --data "celeba:../shared/data/celeba?split=mafl_train" --max-images 1000
    python bench/eval_regress_cache.py --device cuda --epochs 5
"""

from __future__ import annotations

import argparse
import math
import time
import warnings

import numpy as np
import torch

from equinv import coords as C
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.errors import SkipLog
from equinv.evaluate.regressor_fit import regressor_step, train_regressor
from equinv.features.cache import extract_features
from equinv.features.stats import prepare_input, stats_for_kind
from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps
from equinv.models.regressor import KeypointRegressor
from equinv.runtime import tune_allocator


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _with_limit(spec: str, n: int | None) -> str:
    """``spec`` with ``limit=n`` added to its options (the generic first-N-rows option of every kind)."""
    if n is None:
        return spec
    return f"{spec}{'&' if '?' in spec else '?'}limit={n}"


def load_dataset(spec: str, image_size: int) -> LandmarkDataset:
    """The decoded (canvas-cached) dataset of ``spec``, as ``run_regression`` loads it."""
    index = read_index(spec, SkipLog())
    ds = LandmarkDataset(index, Preprocess(size=image_size))
    ds.prepare(SkipLog(), progress=False)
    return ds


def recompute_epochs(ds: LandmarkDataset, hc: Hypercolumn, stats: str, dev: torch.device, *, epochs: int, lr: float,
                     wd: float, batch_size: int, seed: int, grid: int, n_heatmaps: int) -> list[dict]:
    """The reference's loop: each epoch runs every batch through the frozen trunk, then the regressor step.

    Mirrors :func:`train_regressor` (same seeded initialisation, optimiser, schedule, shuffling and loss)
    with the cached maps replaced by ``hc.maps`` of the freshly read images. Returns one entry per epoch:
    ``{"epoch", "loss", "seconds", "trunk_seconds"}``.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reg = KeypointRegressor(hc.channels, len(ds.names), n_heatmaps=n_heatmaps).to(dev)
    opt = torch.optim.Adam(reg.parameters(), lr=lr, betas=(0.5, 0.999), eps=1e-8, weight_decay=wd)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs, eta_min=lr * 8e-4)
    hc.eval()
    n = len(ds)
    out = []
    for epoch in range(1, epochs + 1):
        _sync(dev)
        t0 = time.perf_counter()
        trunk_s = 0.0
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            sched.step()
        reg.train()
        order = torch.randperm(n, generator=g).numpy()
        total, steps = 0.0, 0
        for s in range(0, n, batch_size):
            idx = order[s : s + batch_size]
            view = final_view(ds.__getitems__(idx.tolist()), ds.pre)
            _sync(dev)
            t1 = time.perf_counter()
            with torch.no_grad():
                maps = hc.maps(prepare_input(view["image"], None, stats, dev))
            _sync(dev)
            trunk_s += time.perf_counter() - t1
            gt = C.points_to_norm(view["landmarks"].float(), ds.pre.size, align_corners=True).to(dev)
            vis = view["visible"].to(dev)
            total += regressor_step(reg, opt, maps, gt, vis, grid)
            steps += 1
        _sync(dev)
        out.append({"epoch": epoch, "loss": total / max(1, steps), "seconds": time.perf_counter() - t0,
                    "trunk_seconds": trunk_s})
    return out


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="synthetic:512?size=96", help="training dataset spec (KIND:PATH[?options])")
    p.add_argument("--max-images", type=int, default=None, help="use the first N rows of --data (?limit=N)")
    p.add_argument("--arch", default="resnet18")
    p.add_argument("--backbone", default=None, help="backbone weights (default: random init, seeded)")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--protocol-epochs", type=int, default=120, help="epochs of the projection (protocol: 120)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--feature-batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--grid", type=int, default=48)
    p.add_argument("--n-heatmaps", type=int, default=50)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    return p.parse_args()


def main() -> None:
    args = _args()
    tune_allocator()  # as the equinv CLI does
    if args.threads:
        torch.set_num_threads(args.threads)
    dev = torch.device(args.device)

    spec = _with_limit(args.data, args.max_images)
    t0 = time.perf_counter()
    ds = load_dataset(spec, args.image_size)
    load_s = time.perf_counter() - t0
    stats = stats_for_kind(ds.index.kind)
    trunk = frozen_trunk(args.arch, args.backbone, seed=args.seed)
    hc = Hypercolumn(trunk, reference_taps(args.layers), size=args.grid).to(dev).eval()
    common = dict(epochs=args.epochs, lr=args.lr, wd=args.wd, batch_size=args.batch_size, seed=args.seed,
                  grid=args.grid, n_heatmaps=args.n_heatmaps)

    # (a) cached: extraction once, then train_regressor on the fp16 maps (what run_regression does)
    _sync(dev)
    t0 = time.perf_counter()
    fs = extract_features(ds, hc, stats, dev, batch=args.feature_batch, spec=spec, eyes=ds.index.eyes)
    _sync(dev)
    extract_s = time.perf_counter() - t0
    cache_mb = sum(m.numel() * m.element_size() for m in fs.maps) / 2**20
    shapes = ", ".join(f"{t} {'×'.join(map(str, m.shape[1:]))}" for t, m in zip(hc.taps, fs.maps, strict=True))
    stamps: list[float] = []
    cached_log: list[dict] = []

    def log(entry: dict) -> None:
        _sync(dev)
        stamps.append(time.perf_counter())
        cached_log.append(entry)

    t0 = time.perf_counter()
    train_regressor(fs, hc.channels, device=dev, **common, log=log)
    cached_epochs = np.diff([t0, *stamps])
    del fs

    # (b) recompute: the trunk runs on every batch of every epoch
    rec = recompute_epochs(ds, hc, stats, dev, **common)
    rec_epochs = np.array([e["seconds"] for e in rec])
    trunk_epochs = np.array([e["trunk_seconds"] for e in rec])

    e_c, e_r = float(cached_epochs.mean()), float(rec_epochs.mean())
    tot_c, tot_r = extract_s + float(cached_epochs.sum()), float(rec_epochs.sum())
    pe = args.protocol_epochs
    proj_c, proj_r = extract_s + pe * e_c, pe * e_r
    k = len(ds.names)
    print(f"eval regress, feature cache vs backbone every epoch: {spec}, {args.arch} "
          f"({'random init' if args.backbone is None else args.backbone}) layer {args.layers} ({hc.dim}-d), "
          f"{args.image_size}-px input, grid {args.grid}², K={k} × {args.n_heatmaps} heat-maps, batch "
          f"{args.batch_size}, device {dev}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"images {len(ds)}, epochs {args.epochs} (dataset load/decode {load_s:.1f} s, not counted)")
    print(f"cache: {cache_mb:.1f} MB fp16 ({cache_mb / len(ds) * 1024:.1f} KB/image; native maps {shapes})")
    print(f"feature extraction (once): {extract_s:.2f} s ({len(ds) / extract_s:.0f} img/s)")
    print("per-epoch seconds, cached:    " + " ".join(f"{x:.2f}" for x in cached_epochs) + f"  (mean {e_c:.2f})")
    print("per-epoch seconds, recompute: " + " ".join(f"{x:.2f}" for x in rec_epochs) + f"  (mean {e_r:.2f}; "
          f"trunk forward {trunk_epochs.mean():.2f} of it)")
    print(f"total for {args.epochs} epochs: cached {tot_c:.2f} s (extraction {extract_s:.2f} + epochs "
          f"{cached_epochs.sum():.2f}), recompute {tot_r:.2f} s -> speed-up {tot_r / tot_c:.2f}x")
    print(f"per epoch: recompute / cached = {e_r / e_c:.2f}x")
    print(f"projected to {pe} epochs: cached {proj_c:.1f} s (extraction + {pe}·{e_c:.2f}), recompute {proj_r:.1f} s "
          f"({pe}·{e_r:.2f}) -> speed-up {proj_r / proj_c:.2f}x")
    lc, lr_ = cached_log[-1]["loss"], rec[-1]["loss"]
    print(f"last-epoch training loss: cached {lc:.4f}, recompute {lr_:.4f} (same init and order; the cache is "
          f"fp16, so they differ by rounding)" + ("" if math.isfinite(lc) and math.isfinite(lr_) else " NON-FINITE"))


if __name__ == "__main__":
    main()

"""Landmark-regressor step on frozen hypercolumns: factorised by layer vs the materialised hypercolumn.

The regressor is protocol §4's head (:class:`equinv.models.regressor.KeypointRegressor`): a 1×1 conv
C → K·50 without bias, spatial softmax ×100, soft-argmax, grouped linear → (B, K, 2), smooth-L1 loss
against random targets, Adam. Two ways to evaluate the same head (identical weights and outputs):

- factorised: each layer's native map (e.g. ResNet50 at 96 px: 2048×3², 1024×6², 512×12², 256×24²) is
  projected to K·50 channels at its own resolution, then upsampled bilinearly to the grid and summed;
- materialised: the (B, 3840, 48, 48) hypercolumn is built (bilinear upsampling + concat), then the conv.

The frozen backbone's maps are computed once, outside the timed step (in the real pipeline they are
cached). A step = zero_grad, forward, loss, backward, Adam step; its time is the median over ``--steps``
after one warm-up. Memory:

- CUDA: ``torch.cuda.max_memory_allocated`` during the steps, above what was allocated before them;
- always: the bytes autograd saves for backward (unique storages, via ``saved_tensors_hooks``), not
  counting the cached backbone maps both modes share, plus the materialised hypercolumn (the head's
  input, which the conv saves) -- the largest tensors alive at the peak;
- always: the process's max-RSS growth during the steps. Each mode runs in its own subprocess, so
  the two RSS figures do not contaminate each other.

    python bench/factorised_head.py                      # CPU, ResNet50, batch 32, 96 px, 48² grid, K=5
    python bench/factorised_head.py --device cuda --steps 20
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F

from equinv.models.hypercolumn import Hypercolumn, frozen_trunk, reference_taps
from equinv.models.regressor import KeypointRegressor, regression_loss

MODES = ("factorised", "materialised")


def _max_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def run_mode(mode: str, args: argparse.Namespace) -> dict:
    dev = torch.device(args.device)
    torch.manual_seed(0)
    hc = Hypercolumn(frozen_trunk(args.arch, seed=0), reference_taps(args.layers), size=args.grid).to(dev).eval()
    images = torch.randn(args.batch, 3, args.image, args.image, device=dev)
    with torch.no_grad():
        maps = [m.contiguous() for m in hc.maps(images)]  # frozen features, computed once ("cached")
    del images
    shared = {m.untyped_storage().data_ptr() for m in maps}
    torch.manual_seed(1)
    reg = KeypointRegressor(hc.channels, args.landmarks, args.heatmaps).to(dev)
    target = torch.rand(args.batch, args.landmarks, 2, device=dev) * 2 - 1
    opt = torch.optim.Adam(reg.parameters(), lr=1e-3, betas=(0.5, 0.999), weight_decay=5e-4)

    saved: dict[int, int] = {}
    skip: set[int] = set(shared)  # storages not counted as saved: the cached maps (and the hypercolumn)

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        if s.data_ptr() not in skip:
            saved[s.data_ptr()] = s.nbytes()
        return t

    build_times: list[float] = []

    def step() -> tuple[float, float, int, int]:
        saved.clear()
        _sync(dev)
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        input_bytes = 0
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            if mode == "factorised":
                pred = reg(maps, args.grid)
            else:
                with torch.no_grad():
                    hyper = torch.cat([F.interpolate(m, size=(args.grid, args.grid), mode="bilinear",
                                                     align_corners=False) for m in maps], dim=1)
                _sync(dev)
                build_times.append(time.perf_counter() - t0)
                input_bytes = hyper.untyped_storage().nbytes()
                skip.add(hyper.untyped_storage().data_ptr())  # reported as the input, not twice
                pred = reg.forward_dense(hyper)
            loss = regression_loss(pred, target)
        saved_bytes = sum(saved.values())
        loss.backward()
        opt.step()
        _sync(dev)
        dt = time.perf_counter() - t0
        if mode == "materialised":
            skip.discard(hyper.untyped_storage().data_ptr())
        return dt, loss.item(), saved_bytes, input_bytes

    rss0 = _max_rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
        base = torch.cuda.memory_allocated(dev)
    _, loss0, _, _ = step()  # warm-up
    build_times.clear()
    times, saved_b, input_b = [], 0, 0
    for _ in range(args.steps):
        dt, _, sb, ib = step()
        times.append(dt)
        saved_b, input_b = max(saved_b, sb), max(input_b, ib)
    out = {
        "mode": mode,
        "step_ms": 1e3 * statistics.median(times),
        "build_ms": 1e3 * statistics.median(build_times) if build_times else 0.0,
        "saved_mb": saved_b / 2**20,
        "input_mb": input_b / 2**20,
        "rss_delta_mb": _max_rss_mb() - rss0,
        "first_loss": loss0,
        "cached_maps_mb": sum(m.numel() * m.element_size() for m in maps) / 2**20,
    }
    if dev.type == "cuda":
        out["cuda_peak_mb"] = (torch.cuda.max_memory_allocated(dev) - base) / 2**20
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--arch", default="resnet50")
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--image", type=int, default=96)
    p.add_argument("--grid", type=int, default=48)
    p.add_argument("--landmarks", type=int, default=5)
    p.add_argument("--heatmaps", type=int, default=50)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child:
        print(json.dumps(run_mode(args.child, args)))
        return

    rows = []
    for mode in MODES:
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", mode]
        res = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if res.returncode != 0:
            sys.exit(f"{mode} failed:\n{res.stderr}")
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
    f, m = rows
    c = sum([2048, 1024, 512, 256, 64][: args.layers]) if args.arch == "resnet50" else None
    print(f"regressor step: {args.arch} layer {args.layers}{f' ({c}-d)' if c else ''}, batch {args.batch}, "
          f"{args.image}-px input, {args.grid}² grid, K={args.landmarks} × {args.heatmaps} heat-maps, "
          f"device {args.device}, torch {torch.__version__}, {torch.get_num_threads()} threads; "
          f"median of {args.steps} steps (fwd+bwd+Adam)")
    print(f"cached backbone maps (both modes, not counted below): {f['cached_maps_mb']:.1f} MB")
    cuda = "cuda_peak_mb" in f
    head = (f"{'mode':13s} {'step ms':>9s} {'build ms':>9s} {'saved MB':>9s} {'input MB':>9s} "
            f"{'live MB':>9s} {'maxRSS Δ MB':>12s}" + (f" {'CUDA peak MB':>13s}" if cuda else ""))
    print(head)
    for r in rows:
        live = r["saved_mb"] + r["input_mb"]
        print(f"{r['mode']:13s} {r['step_ms']:9.1f} {r['build_ms']:9.1f} {r['saved_mb']:9.1f} {r['input_mb']:9.1f} "
              f"{live:9.1f} {r['rss_delta_mb']:12.1f}" + (f" {r['cuda_peak_mb']:13.1f}" if cuda else ""))

    def ratio(key):
        a, b = m[key], f[key]
        return f"{a / b:.1f}x" if b > 0 else "n/a"

    live_ratio = (m["saved_mb"] + m["input_mb"]) / max(f["saved_mb"] + f["input_mb"], 1e-9)
    print(f"materialised / factorised: time {ratio('step_ms')}, live tensors {live_ratio:.1f}x, "
          f"max-RSS growth {ratio('rss_delta_mb')}" + (f", CUDA peak {ratio('cuda_peak_mb')}" if cuda else ""))
    print(f"first-step loss: factorised {f['first_loss']:.6f}, materialised {m['first_loss']:.6f} "
          f"(same weights; equal up to float rounding)")


if __name__ == "__main__":
    main()

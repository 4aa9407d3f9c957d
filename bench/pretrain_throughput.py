"""MoCo pretraining throughput: the real pipeline vs the backbone's compute bound, and activation memory.

For each architecture at 96 px it prints
- pipeline img/s: cached real images → batched device-side augmentation (two views) → MoCo step;
- compute img/s: the same MoCo step (query forward+backward, key forward, SGD) on random tensors;
- their ratio (target ≥ 0.85);
- for each mode (``--modes fp32,fp32+cl,bf16``: contiguous fp32, channels-last fp32, bf16 autocast with
  channels-last; ``equinv.precision``) the compute bound relative to fp32's (``x fp32 bound``): how much the
  switch raises the bound itself; ``+dense`` adds equinv's equivariance term (``equinv pretrain --preset dense``:
  tracked views and the dense head and loss), so ``--modes fp32,fp32+dense`` prices the term;
- the forward/backward activation memory of one 96-px image, counted as torchsummary counts it
  ("Forward/backward pass size": 2 × every layer's output × 4 bytes; the paper's Table 7 numbers),
  and the bytes actually saved for backward by autograd; on CUDA also the measured peak.

    python bench/pretrain_throughput.py --data celeba:../shared/data/celeba --batch 64 --steps 3
    python bench/pretrain_throughput.py --archs resnet18 --modes fp32,fp32+cl,bf16 --steps 5
    python bench/pretrain_throughput.py --archs resnet18 --modes fp32,fp32+dense --batch 256 --steps 3
    python bench/pretrain_throughput.py --device cuda --batch 256 --steps 10
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from equinv import precision as P
from equinv.data.dataset import LandmarkDataset
from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.data.spec import read_index
from equinv.models.backbones import Encoder
from equinv.models.moco import MoCo
from equinv.train.pretrain import PretrainConfig
from equinv.train.views import ViewMaker

PAPER_MB = {"resnet18": 11.54, "resnet50": 52.65}


def torchsummary_mb(model: nn.Module, size: int = 96) -> float:
    """torchsummary's "Forward/backward pass size (MB)" for one image: 2 × Σ layer outputs × 4 B."""
    total = 0
    hooks = []

    def hook(_m, _i, out):
        nonlocal total
        total += out.numel()

    for m in model.modules():
        if not isinstance(m, (nn.Sequential, nn.ModuleList)) and m is not model:
            hooks.append(m.register_forward_hook(hook))
    model.eval()
    with torch.no_grad():
        model(torch.zeros(2, 3, size, size))
    for h in hooks:
        h.remove()
    return 2.0 * (total / 2) * 4.0 / 2**20


def saved_for_backward_mb(model: nn.Module, size: int = 96) -> float:
    """Bytes autograd keeps for the backward pass of one image (unique storages)."""
    seen: dict[int, int] = {}

    def pack(t):
        seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(torch.randn(2, 3, size, size))
    out.sum().backward()
    return sum(seen.values()) / 2 / 2**20


def parse_mode(mode: str) -> tuple[str, bool, bool]:
    """``fp32`` | ``fp32+cl`` | ``bf16``, optionally ``+dense`` → ``(precision, channels_last, dense)``."""
    prec, *extras = mode.split("+")
    if set(extras) - {"cl", "dense"}:
        raise SystemExit(f"unknown mode {mode!r}: fp32, fp32+cl or bf16, each optionally +dense")
    return P.check(prec), "cl" in extras, "dense" in extras


def build_moco(arch: str, dense: bool) -> MoCo:
    """The paper's MoCo, or with ``dense`` the ``dense`` preset's (its equivariance term's settings)."""
    if not dense:
        return MoCo(arch)
    c = PretrainConfig.from_preset("dense")
    return MoCo(arch, dense_dim=c.dense_dim, dense_weight=c.dense, dense_temperature=c.dense_temperature,
                dense_power=c.dense_power)


def moco_step(model: MoCo, opt: torch.optim.Optimizer, q: torch.Tensor, k: torch.Tensor, mode: str,
              points=None) -> None:
    prec, cl, _ = parse_mode(mode)
    with P.autocast(q.device, prec):
        loss, _ = model(P.inputs(q, prec, cl), P.inputs(k, prec, cl), points)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_arch(
    arch: str, images: ImageSet, views: ViewMaker, batch: int, steps: int, device: torch.device, mode: str
) -> dict:
    torch.manual_seed(0)
    prec, cl, dense = parse_mode(mode)
    model = P.prepare(build_moco(arch, dense).to(device).train(), prec, cl)
    params = [p for p in model.parameters() if p.requires_grad]  # the query encoder (and the dense head)
    opt = torch.optim.SGD(params, lr=0.03, momentum=0.9, weight_decay=1e-4)
    size = views.view.final
    q = torch.randn(batch, 3, size, size, device=device)
    k = torch.randn(batch, 3, size, size, device=device)
    g = torch.Generator().manual_seed(0)
    order = torch.randperm(len(images), generator=g)
    side = PretrainConfig.from_preset("dense").dense_points
    # the compute bound's points: one real draw of tracked points, reused with the random tensors
    fixed = views.tracked(images.__getitems__(order[:batch].tolist())["image"].to(device), g, side)[2] \
        if dense else None
    # Compute-bound and pipeline steps alternate, and medians are compared, so that a change in the
    # machine's load during the run affects both alike.
    t_compute, t_pipe, t_aug = [], [], []
    for i in range(steps + 1):
        sync(device)
        t0 = time.perf_counter()
        moco_step(model, opt, q, k, mode, fixed)
        sync(device)
        t1 = time.perf_counter()
        idx = order[i * batch : (i + 1) * batch].tolist()
        x = images.__getitems__(idx)["image"].to(device, non_blocking=True)
        if dense:
            vq, vk, points = views.tracked(x, g, side)
        else:
            (vq, vk), points = views(x, g), None
        sync(device)
        t2 = time.perf_counter()
        moco_step(model, opt, vq, vk, mode, points)
        sync(device)
        t3 = time.perf_counter()
        if i:  # the first round is the warm-up
            t_compute.append(t1 - t0)
            t_pipe.append(t3 - t1)
            t_aug.append(t2 - t1)
    med = lambda v: float(torch.tensor(v).median())  # noqa: E731
    compute = batch / med(t_compute)
    pipeline = batch / med(t_pipe)
    aug_share = med(t_aug) / med(t_pipe)
    enc = Encoder(arch)
    row = {
        "arch": arch,
        "mode": mode,
        "pipeline_img_s": pipeline,
        "compute_img_s": compute,
        "ratio": pipeline / compute,
        "augment_share": aug_share,
        "fwd_bwd_mb_torchsummary": torchsummary_mb(enc, size),
        "saved_for_backward_mb": saved_for_backward_mb(enc, size),
    }
    if device.type == "cuda":
        enc = enc.to(device).train()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        enc(torch.randn(1, 3, size, size, device=device)).sum().backward()
        row["cuda_peak_mb_one_image"] = (torch.cuda.max_memory_allocated(device) - base) / 2**20
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="celeba:../shared/data/celeba", help="KIND:PATH of real images")
    p.add_argument("--archs", default="resnet18,resnet50,resnet50_half")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up)")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--modes", default=None,
                   help="comma list of fp32, fp32+cl (channels-last), bf16 (autocast, channels-last); default: all "
                   "three where the device has native bf16 kernels, else fp32,fp32+cl (emulated bf16 is 10x slower)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)

    class Cfg:  # what ViewMaker.from_config reads
        data, recipe, size, tps, flip, grayscale = [args.data], "auto", args.size, None, False, 0.0

    views = ViewMaker.from_config(Cfg)
    ds = LandmarkDataset(read_index(args.data), Preprocess(size=args.size, context=views.context))
    ds.prepare()
    images = ImageSet([ds])
    if len(images) < args.batch * (args.steps + 1):
        raise SystemExit(f"need {args.batch * (args.steps + 1)} images, {args.data} has {len(images)}")
    cpu = f"CPU, {torch.get_num_threads()} threads, capability {torch.backends.cpu.get_cpu_capability()}"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu
    print(f"MoCo pretraining throughput at {args.size} px, batch {args.batch}, {args.steps} timed steps, "
          f"on {dev_name}")
    print(f"data {args.data} ({len(images)} images, cached), views: {views.view}")
    print(f"native bf16 kernels on {device}: {P.native_bf16(device)} (without them bf16 is emulated)")
    hdr = f"{'arch':14s} {'mode':>9s} {'pipeline img/s':>14s} {'compute img/s':>13s} {'ratio':>6s} " \
          f"{'aug share':>9s} {'fwd/bwd MB (torchsummary)':>26s} {'paper MB':>8s} {'saved MB':>8s} " \
          f"{'x fp32 bound':>13s}"
    print(hdr)
    modes = args.modes or ("fp32,fp32+cl,bf16" if P.native_bf16(device) else "fp32,fp32+cl")
    fp32_compute = {}
    for arch in args.archs.split(","):
        for mode in modes.split(","):
            r = bench_arch(arch, images, views, args.batch, args.steps, device, mode)
            fp32_compute.setdefault(arch, r["compute_img_s"])
            print_row(r, fp32_compute[arch])


def print_row(r: dict, fp32_compute: float) -> None:
    """One table line; ``x fp32 bound``: this row's compute bound over the first mode's (fp32)."""
    arch = r["arch"]
    paper = PAPER_MB.get(arch)
    print(
        f"{arch:14s} {r['mode']:>9s} {r['pipeline_img_s']:14.1f} {r['compute_img_s']:13.1f} {r['ratio']:6.2f} "
        f"{r['augment_share']:9.2f} {r['fwd_bwd_mb_torchsummary']:26.2f} "
        f"{(f'{paper:.2f}' if paper else '-'):>8s} {r['saved_for_backward_mb']:8.2f}"
        + f" {r['compute_img_s'] / fp32_compute:13.2f}"
        + (f"  cuda peak {r['cuda_peak_mb_one_image']:.1f} MB" if "cuda_peak_mb_one_image" in r else ""),
        flush=True,
    )


if __name__ == "__main__":
    main()

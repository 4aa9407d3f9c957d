"""Does fine-tuning the trunk with the projector's DVE loss move different-identity matching? (issue 18, target 5)

    python experiments/finetune_probe.py --backbone runs/repro/cpu/faces_dense_aux/pretrain \
        --projector runs/repro/cpu/faces_dense_aux/project_dve_d256 [--minutes 15] [--trunk-lr 1e-4]

Every frozen-hypercolumn projector ends at 5.6-6.0 on validation (experiments/findings.md), so this probe
unfreezes the ResNet trunk: starting from ``--backbone`` and the trained 256-D ``--projector`` (a ``--mode dve``
run), both are trained with the same loss and pairs as ``equinv project --mode dve`` (DVE's TPS pairs and
photometric noise, the next face of the batch as auxiliary, T 20, power 0.5) on the images, grid and batch of
the projector run (read from its config: the CPU plan's 3,000 CelebA faces, 24² grid, batch 32), for
``--minutes`` of wall-clock. Batch-norm statistics stay frozen (eval mode; batch 32 is too small to re-estimate
them). Matching on the projector run's validation pairs (the plan's: 250 same- and 250 different-identity pairs
of CelebA mafl_train; never a test split) before training and after every epoch, printed as a markdown row each.
Nothing is saved: this answers whether the direction is worth a product option.
"""

from __future__ import annotations

import argparse
import math
import time

import torch

from equinv.data.images import ImageSet
from equinv.data.preprocess import Preprocess
from equinv.errors import SkipLog
from equinv.evaluate.matching import match_errors
from equinv.features.descriptors import descriptor_fn
from equinv.features.sources import ProjectedSource, hypercolumn_of
from equinv.features.spec import FeatureSpec
from equinv.losses.dve import dve_loss
from equinv.models.projector import load_projector
from equinv.train.dve import make_pairs
from equinv.train.projector import _load_set, _val_indices


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backbone", required=True, help="pretraining run (its backbone.safetensors)")
    ap.add_argument("--projector", required=True, help="equinv project --mode dve run to start from")
    ap.add_argument("--minutes", type=float, default=15.0, help="training wall-clock (default 15)")
    ap.add_argument("--trunk-lr", type=float, default=1e-4, help="Adam lr of the trunk (default 1e-4)")
    ap.add_argument("--proj-lr", type=float, default=1e-4, help="Adam lr of the projector (default 1e-4)")
    ap.add_argument("--batch-size", type=int, default=None, help="default: the projector run's")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    # the projector run's own images, validation pairs, grid and batch: only the trunk's freedom differs
    proj, pcfg = load_projector(a.projector)
    batch_size = a.batch_size or pcfg["batch_size"]
    log, pre = SkipLog(), Preprocess(size=pcfg["size"])
    images = ImageSet([_load_set(pcfg["data"], pre, log, False)], max_images=pcfg["max_images"], seed=pcfg["seed"])
    val = _load_set(pcfg["val"], pre, log, False)
    val_idx = _val_indices(len(val), pcfg["val_pairs"], pcfg["val_seed"])

    hc = hypercolumn_of(FeatureSpec(backbone=a.backbone, arch=pcfg["arch"], layers=pcfg["layer"]),
                        grid=pcfg["size"]).eval()
    trunk_params = list(hc.parameters())
    for p in trunk_params + list(proj.parameters()):
        p.requires_grad_(True)
    opt = torch.optim.Adam([{"params": trunk_params, "lr": a.trunk_lr},
                            {"params": list(proj.parameters()), "lr": a.proj_lr}], betas=(0.5, 0.999),
                           weight_decay=5e-4)

    def validate(epoch: int, steps: int, seconds: float, loss: float) -> None:
        proj.eval()
        with torch.no_grad():
            r = match_errors(descriptor_fn(ProjectedSource(hc, proj, pcfg["size"], "output"), pcfg["size"]), val,
                             n_pairs=pcfg["val_pairs"], seed=pcfg["val_seed"], batch=16, indices=val_idx,
                             progress=False)
        print(f"| {epoch} | {steps} | {seconds / 60:.1f} | {loss:.4f} | {r['match_error_same']:.2f} | "
              f"{r['match_error_diff']:.2f} |", flush=True)

    print("| epoch | steps | train min | mean loss | match same | match diff |\n|---|---|---|---|---|---|")
    validate(0, 0, 0.0, float("nan"))
    steps_per_epoch = math.ceil(len(images) / batch_size)
    spent, step, epoch = 0.0, 0, 0
    while spent < a.minutes * 60:
        epoch += 1
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(a.seed * 1000 + epoch))
        losses = []
        proj.train()
        t0 = time.perf_counter()
        for s in range(steps_per_epoch):
            batch = images.__getitems__(order[s * batch_size:(s + 1) * batch_size].tolist())
            gen = torch.Generator().manual_seed(a.seed * 1_000_003 + step)
            x1, x2, grid = make_pairs(batch["image"], pcfg["size"], pcfg["size"], gen)
            f1, f2 = proj(hc.maps(torch.cat((x1, x2))), pcfg["train_size"]).chunk(2)
            loss = dve_loss(f1, f2, grid, True, 0.5, scale=20.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            step += 1
            if spent + time.perf_counter() - t0 >= a.minutes * 60:
                break
        spent += time.perf_counter() - t0
        validate(epoch, step, spent, sum(losses) / len(losses))


if __name__ == "__main__":
    main()

"""``equinv demo``: the main job, end to end, on the built-in synthetic faces.

1. Generate the faces and read them through the same reader → preprocessing → cache path as real data;
   draw two augmented MoCo views of a batch (JPEG noise, random resized crop, colour jitter, PCA lighting,
   TPS warp, flip with left/right swap) with their landmarks moved exactly.
2. Pretrain a ResNet18 with MoCo on the unlabeled faces for a short budget.
3. Fit a landmark model on a few labelled faces (``equinv fit``'s code and defaults: with this few labels, landmark
   transfer, :mod:`equinv.landmarks.transfer`), once on the pretrained
   backbone and once on the random initialisation; predict held-out faces (``LandmarkModel.predict``, in their
   own pixels) and print the IOD error of both beside the mean training shape's — whatever they are.
4. Draw the pretrained model's predictions and a landmark transfer (``equinv match``) from one face to others.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from equinv.augment.photometric import denormalize
from equinv.augment.recipes import face_moco, make_view
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.preprocess import Preprocess, center_view
from equinv.data.spec import read_index
from equinv.records import write_json
from equinv.viz.contact_sheet import contact_sheet, draw_batch


def _augmentation(out: Path, n: int, dev: torch.device, seed: int, batch: int) -> dict:
    """Step 1: generate, read, cache and augment; the sample and view figures."""
    t0 = time.perf_counter()
    spec = f"synthetic:{n}?seed={seed}"
    index = read_index(spec)
    t_gen = time.perf_counter() - t0
    ds = LandmarkDataset(index, Preprocess(size=96))
    t0 = time.perf_counter()
    decoded = ds.prepare()
    t_cache = time.perf_counter() - t0

    contact_sheet([center_view(ds.sample(i), ds.pre) for i in range(batch)], out / "samples.png", title=spec)
    g = torch.Generator().manual_seed(seed)
    b = ds.__getitems__(list(range(batch)))
    images, lm, vis = b["image"].to(dev), b["landmarks"].to(dev), b["visible"].to(dev)
    view_cfg = replace(
        face_moco(canvas=ds.pre.canvas, final=ds.pre.size), tps="paper", tps_strength=4.0,
        hflip_p=0.5, flip_perm=ds.flip_perm,
    )
    t0 = time.perf_counter()
    views = [make_view(images, lm, vis, view_cfg, g) for _ in range(2)]
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    t_aug = time.perf_counter() - t0
    for k, v in enumerate(views, 1):
        shown = denormalize(v.images, view_cfg.mean, view_cfg.std).clamp(0, 1).cpu()
        draw_batch(shown, v.landmarks.cpu(), v.visible.cpu(), out / f"view{k}.png", names=ds.names,
                   title=f"augmented view {k} (landmarks moved with the pixels)")
    plain = final_view(b, ds.pre)
    summary = {
        "dataset": spec,
        "images": len(ds),
        "landmarks": list(ds.names),
        "decoded_now": decoded,
        "device": str(dev),
        "seconds": {"generate+read": round(t_gen, 2), "decode+cache": round(t_cache, 2),
                    "augment_2_views": round(t_aug, 3)},
        "view_shape": list(views[0].images.shape),
        "canvas": ds.pre.canvas,
        "final": ds.pre.size,
        "mean_landmark_shift_px": float((views[0].landmarks - plain["landmarks"].to(dev)).norm(dim=-1).mean()),
        "figures": ["samples.png", "view1.png", "view2.png"],
    }
    print(f"equinv demo: {len(ds)} synthetic faces ({spec}), {len(ds.names)} landmarks, on {dev}")
    print(f"  generated/read in {t_gen:.1f} s, decoded {decoded} into the cache in {t_cache:.1f} s")
    print(f"  two augmented views of {batch} images in {t_aug * 1000:.0f} ms -> {tuple(views[0].images.shape)}")
    return summary


def _pretrain(out: Path, spec: str, epochs: int, dev: torch.device, seed: int) -> tuple[Path, dict]:
    """Step 2: a short MoCo run on the unlabeled faces; its run directory and a summary."""
    from equinv.train.pretrain import PretrainConfig, pretrain

    t0 = time.perf_counter()
    n = int(spec.split(":")[1].split("?")[0])
    cfg = PretrainConfig(data=[spec], out=str(out), arch="resnet18", batch_size=min(64, n), epochs=epochs, size=96,
                         seed=seed, device=str(dev), ckpt_every=10_000, log_every=5)
    run = pretrain(cfg, progress=False)
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    info = {"epochs": epochs, "steps": rows[-1]["step"] if rows else 0, "seconds": round(time.perf_counter() - t0, 1),
            "loss_first": rows[0]["loss"] if rows else None, "loss_last": rows[-1]["loss"] if rows else None}
    print(f"  MoCo ResNet18: {info['steps']} steps in {info['seconds']:.0f} s, InfoNCE {info['loss_first']:.2f} -> "
          f"{info['loss_last']:.2f}")
    return run, info


def _iod(pred: np.ndarray, truth: np.ndarray, eyes=(0, 1)) -> float:
    """Mean IOD error (%) of ``(N, K, 2)`` points in image pixels."""
    iod = np.linalg.norm(truth[:, eyes[0]] - truth[:, eyes[1]], axis=-1)
    return float((np.linalg.norm(pred - truth, axis=-1).mean(1) / iod).mean() * 100)


def _fit_and_test(backbone: str, train: str, test_paths: list, steps: int, dev: torch.device, seed: int):
    """Step 3: fit on the labelled faces with ``backbone``; the model and its held-out predictions."""
    from equinv.features.spec import FeatureSpec
    from equinv.landmarks.fit import FitConfig, fit_model

    cfg = FitConfig(train=train, features=FeatureSpec(backbone=backbone, grid=24, seed=seed), steps=steps,
                    n_heatmaps=16, seed=seed, device=str(dev))
    model, _ = fit_model(cfg)
    return model, model.predict(test_paths)


def run_demo(out: Path, n: int = 256, device: str | None = None, seed: int = 0, batch: int = 16, epochs: int = 4,
             labelled: int = 20, steps: int = 200) -> dict:
    """Run the demo (see the module docstring); returns (and writes to ``out/summary.json``) what it did."""
    from equinv.data.spec import read_index

    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out.mkdir(parents=True, exist_ok=True)
    summary = _augmentation(out, n, dev, seed, batch)
    spec, test = summary["dataset"], f"synthetic:64?seed={seed + 1}"
    train = f"{spec}&limit={labelled}"
    run, summary["pretraining"] = _pretrain(out / "pretrain", spec, epochs, dev, seed)
    recs = read_index(test).records
    paths, truth = [r.path for r in recs], np.stack([r.landmarks for r in recs])
    t0 = time.perf_counter()
    model, pred = _fit_and_test(str(run), train, paths, steps, dev, seed)
    _, pred_random = _fit_and_test("random", train, paths, steps, dev, seed)
    shape = np.stack([r.landmarks for r in read_index(train).records]).mean(0, keepdims=True)
    iod = {"pretrained": _iod(pred, truth), "random_init": _iod(pred_random, truth),
           "mean_shape": _iod(np.broadcast_to(shape, truth.shape), truth)}
    model.save(out / "model")
    from equinv.landmarks.fit import summary as fit_summary

    how = fit_summary(model).split(", ", 1)[1]  # the head and how it was set, e.g. "landmark transfer, window 2 ..."
    print(f"  fit on {labelled} labelled faces ({how}; {time.perf_counter() - t0:.0f} s for both), "
          f"{len(paths)} held-out faces: IOD {iod['pretrained']:.1f}% pretrained, {iod['random_init']:.1f}% "
          f"random init, {iod['mean_shape']:.1f}% mean training shape")
    summary.update(held_out_iod_percent=iod, model=str(out / "model"), labelled=labelled)
    summary["figures"] += _figures(out, run, model, paths, pred, truth, train, test, dev)
    write_json(out / "summary.json", summary)
    print(f"  figures in {out}: {', '.join(summary['figures'])}; model in {out / 'model'}; summary.json")
    return summary


def _figures(out: Path, run: Path, model, paths: list, pred: np.ndarray, truth: np.ndarray, train: str, test: str,
             dev: torch.device) -> list[str]:
    """Step 4: the predictions on held-out faces and a landmark transfer with the pretrained backbone."""
    from PIL import Image

    from equinv.evaluate.landmark_transfer import TransferConfig, run_transfer
    from equinv.features.spec import FeatureSpec
    from equinv.report.figures import landmark_grid

    k = min(8, len(paths))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths[:k]])
    vis = np.ones(truth.shape[:2], bool)[:k]
    landmark_grid(out / "predictions.png", truth[:k], vis, pred[:k], images,
                  title="held-out faces: true (blue) vs predicted (orange), pretrained backbone",
                  size=images.shape[1])
    run_transfer(TransferConfig(reference=f"{train}#0", targets=test, features=FeatureSpec(backbone=str(run)),
                                max_targets=8, n_figure=8, device=str(dev)), out / "transfer")
    return ["predictions.png", "transfer/matches.png"]

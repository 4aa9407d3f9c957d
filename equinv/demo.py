"""``equinv demo``: the main job on the built-in synthetic data.

Generates the synthetic faces, reads them through the same reader/preprocessing/cache path as real
data, draws two augmented MoCo views of a batch on the device (JPEG noise, random resized crop,
colour jitter, PCA lighting, TPS warp, flip with left/right swap) with their landmarks moved
exactly, and writes figures and a JSON summary.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import torch

from equinv.augment.photometric import denormalize
from equinv.augment.recipes import face_moco, make_view
from equinv.data.dataset import LandmarkDataset, final_view
from equinv.data.preprocess import Preprocess, center_view
from equinv.data.spec import read_index
from equinv.viz.contact_sheet import contact_sheet, draw_batch


def run_demo(out: Path, n: int = 256, device: str | None = None, seed: int = 0, batch: int = 16) -> dict:
    """Run the demo; returns (and writes to ``out/summary.json``) what it did."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out.mkdir(parents=True, exist_ok=True)
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
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    print(f"equinv demo: {len(ds)} synthetic faces ({spec}), {len(ds.names)} landmarks, on {dev}")
    print(f"  generated/read in {t_gen:.1f} s, decoded {decoded} into the cache in {t_cache:.1f} s")
    print(f"  two augmented views of {batch} images in {t_aug * 1000:.0f} ms -> {tuple(views[0].images.shape)}")
    print(f"  figures: {out / 'samples.png'}, {out / 'view1.png'}, {out / 'view2.png'}; summary.json")
    return summary

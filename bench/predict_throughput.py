"""``equinv predict`` throughput against the backbone's own forward-only bound, and memory per image.

For ResNet18 and ResNet50 hypercolumn landmark models (96-px views, 5 landmarks, the regressor of ``equinv fit``'s
defaults, 16 heat-maps per landmark on the 32² grid; weights are random: speed does not depend on them) it prints

- predict img/s: ``run_predict`` on N JPEG files on disk (decode → frame → view → features → regressor →
  points in image pixels → JSON written row by row), batch B;
- bound img/s: the trunk's forward pass alone on random ``(B, 3, 96, 96)`` tensors (no decoding, no head);
- their ratio (target ≥ 0.8): the default prediction makes two network passes (the view and its mirror image,
  for the flip-consistency confidence), so it is at most 0.5 of a one-pass bound by construction;
- the same with ``--no-confidence`` (one pass) and its ratio;
- peak resident memory of a predict run at batch B and at batch 4·B, and the difference per image.

    python bench/predict_throughput.py --images 256 --batch 32
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def _model(arch: str):
    from equinv.data.preprocess import FACE_CONTEXT
    from equinv.features.sources import build_source, source_config
    from equinv.features.spec import FeatureSpec
    from equinv.landmarks.model import FORMAT, FORMAT_VERSION, LandmarkModel
    from equinv.models.regressor import KeypointRegressor

    src = build_source(FeatureSpec(arch=arch, grid=32))
    reg = KeypointRegressor(src.channels, 5, n_heatmaps=16, softargmax_mul=3.0).eval()
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "features": src.spec.as_dict(),
            "source_config": source_config(src),
            "regressor": {"channels": list(src.channels), "n_landmarks": 5, "n_heatmaps": 16, "softargmax_mul": 3.0,
                          "grid": 32, "input_scale": False, "bias": False},
            "input": {"image_size": 96, "stats": "face"},
            "framing": {"kind": "folder", "crop": "whole", "context": FACE_CONTEXT, "box_scale": 2.17,
                        "landmark_scale": 3.88, "landmark_extent": None},
            "landmarks": {"names": [f"p{k}" for k in range(5)], "flip_perm": list(range(5)), "eyes": None}}
    return LandmarkModel(src, reg, meta)


def _bound(model, batch: int, reps: int) -> float:
    """img/s of the trunk's forward pass alone."""
    x = torch.randn(batch, 3, 96, 96)
    with torch.no_grad():
        model.source.maps(x)
        t0 = time.perf_counter()
        for _ in range(reps):
            model.source.maps(x)
    return batch * reps / (time.perf_counter() - t0)


def _predict_rate(model_dir: Path, folder: Path, batch: int, out: Path, *extra: str) -> tuple[float, float]:
    """img/s and peak RSS (MB) of ``equinv predict`` in a fresh process (``extra``: more predict flags)."""
    code = ("import resource, sys, time; from equinv.cli import main; t = time.perf_counter(); "
            "rc = main(sys.argv[1:]); dt = time.perf_counter() - t; "
            "print(dt, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)")
    r = subprocess.run([sys.executable, "-c", code, "predict", str(model_dir), str(folder), "--out", str(out),
                        "--batch", str(batch), "--quiet", "--force", *extra], capture_output=True, text=True,
                       check=True)
    dt, rss = (float(v) for v in r.stdout.strip().splitlines()[-1].split())
    return len(list(folder.glob("*.jpg"))) / dt, rss


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256, help="JPEG files to predict (default 256)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--archs", default="resnet18,resnet50")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.images} images of 160x160 px, "
          f"batch {a.batch}")
    print("| arch | predict img/s | bound img/s | ratio | no-confidence img/s | ratio | peak RSS MB (B) "
          "| peak RSS MB (4B) | MB per image |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        (tmp / "img").mkdir()
        for i in range(a.images):
            Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(tmp / "img" / f"{i:05d}.jpg")
        for arch in a.archs.split(","):
            model = _model(arch)
            model.save(tmp / arch)
            rate, rss = _predict_rate(tmp / arch, tmp / "img", a.batch, tmp / "p.json")
            one, _ = _predict_rate(tmp / arch, tmp / "img", a.batch, tmp / "p.json", "--no-confidence")
            _, rss4 = _predict_rate(tmp / arch, tmp / "img", 4 * a.batch, tmp / "p.json")
            bound = _bound(model, a.batch, max(2, 128 // a.batch))
            print(f"| {arch} | {rate:.1f} | {bound:.1f} | {rate / bound:.2f} | {one:.1f} | {one / bound:.2f} | "
                  f"{rss:.0f} | {rss4:.0f} | {(rss4 - rss) / (3 * a.batch):.2f} |")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()

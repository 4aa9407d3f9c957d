"""``equinv predict`` throughput against the backbone's own forward-only bound, and memory per image.

For ResNet18 and ResNet50 hypercolumn landmark models (96-px views, 5 landmarks) with each of ``equinv fit``'s heads
(the regressor: 16 heat-maps per landmark on the 32² grid; landmark transfer: 10 examples, the window fit chose on
10 MTFL faces; weights are random: speed does not depend on them) it prints

- predict img/s: ``equinv predict`` (its CLI entry point) on JPEG files on disk (decode → frame → view →
  features → regressor → points in image pixels → JSON written row by row), batch B, as a steady-state rate: in
  one fresh process, a run on N/2 files (the start-up: imports, the first calls' kernel selection), the same
  again, then a run on N files; the rate is the N/2 more images of the last run over its extra seconds;
- bound img/s: in the same process afterwards, the trunk's forward pass alone on random ``(B, 3, 96, 96)``
  tensors (no decoding, no head; two warm-up calls), so both figures are taken under the same conditions;
- their ratio (target ≥ 0.8): the default prediction makes two network passes (the view and its mirror image,
  for the flip-consistency confidence), so it is at most 0.5 of a one-pass bound by construction;
- the same with ``--no-confidence`` (one pass) and its ratio;
- peak resident memory of a predict run at batch B and at batch 4·B, and the difference per image.

    python bench/predict_throughput.py --images 512 --batch 32
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image

#: The transfer head's examples: five face landmarks (normalised), their spread and window as fit chose them for
#: 10 MTFL faces (docs/landmarks.md); the cost depends on these sizes, not on the descriptors' values.
SHAPE = [[-0.25, -0.31], [0.36, -0.31], [0.10, 0.06], [-0.21, 0.35], [0.28, 0.36]]
SPREAD = [0.064, 0.075, 0.090, 0.100, 0.106]


def _head(kind: str, channels, n_examples: int):
    """A fit-shaped head with random weights: the regressor (16 heat-maps per landmark on 32²) or transfer."""
    from equinv.models.regressor import KeypointRegressor
    from equinv.models.transfer_head import TransferHead

    if kind == "regressor":
        head = KeypointRegressor(channels, 5, n_heatmaps=16, softargmax_mul=3.0).eval()
        return head, {"kind": "regressor", "channels": list(channels), "n_landmarks": 5, "n_heatmaps": 16,
                      "softargmax_mul": 3.0, "grid": 32, "input_scale": False, "bias": False}
    desc = torch.nn.functional.normalize(torch.randn(n_examples, 5, sum(channels)), dim=-1)
    head = TransferHead(channels, desc, torch.ones(n_examples, 5, dtype=torch.bool), torch.tensor(SHAPE),
                        torch.tensor(SPREAD), 2.0, 0.005)
    return head, {"kind": "transfer", "channels": list(channels), "n_landmarks": 5, "n_examples": n_examples,
                  "grid": 48, "window": 2.0, "temperature": 0.005, "shape_only": False}


def _model(arch: str, kind: str = "regressor", n_examples: int = 10):
    from equinv.data.preprocess import FACE_CONTEXT
    from equinv.features.sources import build_source, source_config
    from equinv.features.spec import FeatureSpec
    from equinv.landmarks.model import FORMAT, FORMAT_VERSION, LandmarkModel

    src = build_source(FeatureSpec(arch=arch, grid=32))
    reg, desc = _head(kind, src.channels, n_examples)
    meta = {"format": FORMAT, "format_version": FORMAT_VERSION, "features": src.spec.as_dict(),
            "source_config": source_config(src),
            "regressor": desc,
            "input": {"image_size": 96, "stats": "face"},
            "framing": {"kind": "folder", "crop": "whole", "context": FACE_CONTEXT, "box_scale": 2.17,
                        "landmark_scale": 3.88, "landmark_extent": None},
            "landmarks": {"names": [f"p{k}" for k in range(5)], "flip_perm": list(range(5)), "eyes": None}}
    return LandmarkModel(src, reg, meta)


_CHILD = """
import resource, sys, time
import torch
import equinv
from equinv.cli import main
model_dir, half, full, batch, out, *extra = sys.argv[1:]
def run(folder):
    t = time.perf_counter()
    main(["predict", model_dir, folder, "--out", out, "--batch", batch, "--quiet", "--force", *extra])
    return time.perf_counter() - t
cold, warm, whole = run(half), run(half), run(full)
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
source, x = equinv.load(model_dir).source, torch.randn(int(batch), 3, 96, 96)
with torch.no_grad():
    for _ in range(2):
        source.maps(x)
    t = time.perf_counter()
    for _ in range(8):
        source.maps(x)
bound = 8 * int(batch) / (time.perf_counter() - t)
print(cold, warm, whole, bound, rss)
"""


def _predict_rate(model_dir: Path, img: Path, batch: int, out: Path, *extra: str) -> dict:
    """One fresh process: ``equinv predict`` (through its CLI entry point) on ``img/half`` twice, then on ``img/all``;
    the trunk's forward alone in the same process. Returns the steady-state img/s (the extra images of the
    ``all`` run over the warm ``half`` run, per extra second), the start-up of the first call (s), the bound (img/s)
    and the peak RSS (MB)."""
    r = subprocess.run([sys.executable, "-c", _CHILD, str(model_dir), str(img / "half"), str(img / "all"), str(batch),
                        str(out), *extra], capture_output=True, text=True, check=True)
    cold, warm, whole, bound, rss = (float(v) for v in r.stdout.strip().splitlines()[-1].split())
    n_half, n_all = len(list((img / "half").glob("*.jpg"))), len(list((img / "all").glob("*.jpg")))
    return {"rate": (n_all - n_half) / max(whole - warm, 1e-9), "startup": cold - warm, "bound": bound, "rss": rss}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=256, help="JPEG files to predict (default 256)")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--archs", default="resnet18,resnet50")
    p.add_argument("--heads", default="regressor,transfer",
                   help="fit's heads to time: regressor (16 heat-maps a landmark on 32²) and transfer (10 examples)")
    a = p.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {a.images} images of 160x160 px, "
          f"batch {a.batch}")
    print("| arch | head | predict img/s | bound img/s | ratio | no-confidence img/s | bound img/s | ratio "
          "| start-up s | peak RSS MB (B) | peak RSS MB (4B) | MB per image |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rng = np.random.default_rng(0)
        (tmp / "img" / "all").mkdir(parents=True)
        (tmp / "img" / "half").mkdir()
        for i in range(a.images):
            path = tmp / "img" / "all" / f"{i:05d}.jpg"
            Image.fromarray(rng.integers(0, 256, (160, 160, 3), dtype=np.uint8)).save(path)
            if i < a.images // 2:
                (tmp / "img" / "half" / path.name).hardlink_to(path)
        for arch, head in ((x, h) for x in a.archs.split(",") for h in a.heads.split(",")):
            d = tmp / f"{arch}_{head}"
            _model(arch, head).save(d)
            two = _predict_rate(d, tmp / "img", a.batch, tmp / "p.json")
            one = _predict_rate(d, tmp / "img", a.batch, tmp / "p.json", "--no-confidence")
            big = _predict_rate(d, tmp / "img", 4 * a.batch, tmp / "p.json")
            print(f"| {arch} | {head} | {two['rate']:.1f} | {two['bound']:.1f} | {two['rate'] / two['bound']:.2f} | "
                  f"{one['rate']:.1f} | {one['bound']:.1f} | {one['rate'] / one['bound']:.2f} | {two['startup']:.1f} | "
                  f"{two['rss']:.0f} | {big['rss']:.0f} | {(big['rss'] - two['rss']) / (3 * a.batch):.2f} |")
    print(f"(this process: peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()

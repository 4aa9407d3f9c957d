"""Fake evaluation directories with the real record schemas (regression, match, segment), for the report tests."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

#: Generated on the fly by the synthetic reader, so image figures can be drawn in tests.
SPEC = "synthetic:8?size=64"
NAMES = ["left_eye", "right_eye", "nose", "left_mouth", "right_mouth", "left_brow", "right_brow", "left_ear",
         "right_ear", "chin"]
VERSIONS = {"equinv": "0.1.0", "torch": "2.x", "torchvision": "0.x", "numpy": "2.x", "python": "3.11"}


@lru_cache(maxsize=4)
def _truth(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised ground truth and the final views of ``spec`` exactly as ``run_regression`` saves them."""
    from equinv.data.dataset import LandmarkDataset, final_view
    from equinv.data.preprocess import Preprocess
    from equinv.data.spec import read_index

    ds = LandmarkDataset(read_index(spec), Preprocess(size=96))
    ds.prepare(progress=False)
    v = final_view(ds.__getitems__(list(range(len(ds)))), ds.pre)
    views = v["image"].permute(0, 2, 3, 1).numpy()
    return 2.0 * v["landmarks"].float().numpy() / 95.0 - 1.0, v["visible"].numpy(), views


def write_regression(d: Path, *, spec: str = SPEC, n_train=(2, 4), eyes: bool = True, iod: float = 6.987,
                     pck: float = 81.234, std: float = 0.3512, gt_from: str | None = None, npz: bool = True,
                     backbone: str = "runs/celeba_r18", arch: str = "resnet18", images: bool = True,
                     mean_shape: float | None = None) -> Path:
    """``regression.json`` (+ ``predictions.npz``, with the test views unless ``images`` is false) as
    ``run_regression`` writes them."""
    d.mkdir(parents=True, exist_ok=True)
    gt, vis, views = _truth(gt_from or SPEC)
    runs = []
    for n in n_train:
        e = iod + 4.0 / n if eyes else None
        p = pck - 8.0 / n
        t = {"iod_error_percent": e, "iod_error_percent_std": std if eyes else None, "pck": p, "pck_std": std,
             "paper_pck": None, "paper_pck_std": None,
             "per_landmark": [1.0 + k / 10 for k in range(10)] if eyes else [50.0 + k for k in range(10)],
             "pck_per_landmark": [50.0 + k for k in range(10)], "n_images": len(gt),
             "std": std}
        if mean_shape is not None:  # the no-feature reference, worse with fewer training shapes
            t.update(mean_shape_iod_error_percent=mean_shape + 1.0 / n, mean_shape_iod_error_percent_std=0.1,
                     mean_shape_pck=40.0 - 1.0 / n, mean_shape_pck_std=0.1)
        runs.append({"n_train": n, "all_annotations": False, "repeats": 3, "lr": 1e-2, "wd": 5e-2,
                     "tests": {spec: t}, "per_repeat": []})
    first = runs[0]["tests"][spec]
    rec = {"iod_error_percent": first["iod_error_percent"], "pck": first["pck"], "paper_pck": None,
           "per_landmark": first["per_landmark"], "n_train": n_train[0], "repeats": 3, "std": std, "runs": runs,
           "config": {"train": "synthetic:12?size=64", "test": [spec], "val": None, "backbone": backbone,
                      "arch": arch, "source": "hypercolumn", "epochs": 2, "image_size": 96, "pck_alpha": 0.05},
           "datasets": {"train": "synthetic:12?size=64", "val": None, "test": [spec], "n_train_images": 12,
                        "n_val_images": 0, "n_test_images": [len(gt)]},
           "landmark_names": NAMES, "eyes": [0, 1] if eyes else None, "seed": 0, "versions": VERSIONS,
           "selection": "last epoch (no validation split)", "skipped": []}
    if npz:
        rng = np.random.default_rng(0)
        saved = {"gt_0": gt, "visible_0": vis, **({"images_0": views} if images else {})}
        for i in range(len(n_train)):
            saved[f"pred_{i}_0"] = (gt + rng.normal(0, 0.04, gt.shape)).astype(np.float32)
        np.savez_compressed(d / "predictions.npz", **saved)
        rec["predictions_file"] = "predictions.npz"
    (d / "regression.json").write_text(json.dumps(rec, indent=2))
    return d


def write_match(d: Path, same: float = 3.4567, diff: float = 5.6789, descriptor: str = "hypercolumn") -> Path:
    """``match.json`` as ``eval_match`` writes it."""
    d.mkdir(parents=True, exist_ok=True)
    rec = {"match_error_same": same, "match_error_diff": diff, "match_error_same_px": same * 96 / 70,
           "match_error_diff_px": diff * 96 / 70, "n_pairs": 4, "n_same": 40, "n_diff": 38, "seconds": 1.23,
           "config": {"data": SPEC, "backbone": "runs/celeba_r50", "arch": "resnet50", "layer": 4,
                      "descriptor": descriptor, "pairs": 4, "seed": 1},
           "datasets": [SPEC], "seed": 1, "versions": VERSIONS, "created": "2024-01-01T00:00:00+00:00"}
    (d / "match.json").write_text(json.dumps(rec, indent=2))
    return d


def write_segment(d: Path, *, spec: str = SPEC, n_train=(1, 5), iou: float = 0.4567, std: float = 0.0123,
                  n: int = 8, images: bool = True) -> Path:
    """``segment.json`` + ``segment_predictions.npz`` in the ``equinv eval segment`` schema."""
    d.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:96, :96]
    gt = np.stack([((xx - 48) ** 2 + (yy - 50) ** 2 < (20 + i) ** 2) for i in range(n)]).astype(np.uint8)
    saved = {"mask_gt_0": gt, **({"images_0": _truth(SPEC)[2][:n]} if images else {})}
    runs = []
    for i, k in enumerate(n_train):
        saved[f"mask_pred_{i}_0"] = np.roll(gt, 3 + i, axis=2)
        runs.append({"n_train": k, "repeats": 2, "tests": {spec: {"iou": iou + 0.1 * i, "iou_std": std,
                                                                  "n_images": n}}, "per_repeat": []})
    np.savez_compressed(d / "segment_predictions.npz", **saved)
    rec = {"iou": iou, "std": std, "n_train": n_train[0], "repeats": 2, "runs": runs,
           "config": {"train": "synthetic:12?size=64", "test": [spec], "backbone": "random", "arch": "resnet18",
                      "image_size": 96},
           "datasets": ["synthetic:12?size=64", spec], "seed": 0, "versions": VERSIONS,
           "created": "2024-01-01T00:00:00+00:00", "predictions_file": "segment_predictions.npz"}
    (d / "segment.json").write_text(json.dumps(rec, indent=2))
    return d


def assert_png(p: Path) -> None:
    from PIL import Image

    assert p.is_file() and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    with Image.open(p) as im:
        im.verify()

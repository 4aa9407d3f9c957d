"""Fixtures of the viewer tests: a tiny page on synthetic faces with every view and source, built once per session."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch
from PIL import Image

from equinv.checkpoint import save_checkpoint
from equinv.cli import main
from equinv.data.synthetic import NAMES, render_face
from equinv.evaluate.parts import PartsModel
from equinv.models.dve import build_dve, save_dve
from equinv.models.projector import Projector
from equinv.train.projector import ProjectConfig

REF = "synthetic:8?size=64#2"
GRID = 24


def write_predictions(folder, n: int = 5, errors: bool = False) -> tuple:
    """Synthetic faces as image files and a predict-format JSON with noisy points; returns (path, doc)."""
    rng = np.random.default_rng(0)
    images = []
    for i in range(n):
        face = render_face(seed=3, index=i, size=48 + 16 * i)  # different sizes: points are per image
        p = folder / f"face{i}.png"
        Image.fromarray(face.image).save(p)
        true = face.landmarks.astype(np.float64)
        pred = true + rng.normal(0, 1 + 2 * i, true.shape)
        images.append({"path": str(p), "points": np.round(pred, 3).tolist(),
                       "confidence": np.round(rng.uniform(0, 1, len(true)), 3).tolist(),
                       "true": np.round(true, 3).tolist()})
    images[1]["true"][3] = None  # one landmark not annotated
    doc = {"model": "test-model", "landmarks": list(NAMES), "images": images}
    if errors:
        doc["errors"] = [round(float(v), 4) for v in rng.uniform(0, 0.2, n)]
    path = folder / "predictions.json"
    path.write_text(json.dumps(doc))
    return path, doc


def write_models(folder) -> tuple:
    """Random models as equinv writes them, over resnet18 --layers 4 hypercolumns (960 channels): a DVE
    SmallNet run, an 8-d projector run and a 6-part NMF model. Returns their paths."""
    torch.manual_seed(0)
    dve = folder / "dve"
    save_dve(build_dve("smallnet", 16), dve / "descriptor.safetensors", "smallnet", input_size=70)
    proj = folder / "proj"
    meta = {"config": asdict(ProjectConfig(dim=8)), "channels": [512, 256, 128, 64]}
    save_checkpoint(proj / "checkpoints" / "best.safetensors", Projector((512, 256, 128, 64), dim=8).state_dict(),
                    None, meta=meta)
    g = torch.Generator().manual_seed(0)
    comps = torch.rand(6, 960, generator=g)
    parts = PartsModel("nmf", comps, torch.zeros(960), torch.zeros(6), torch.full((6,), 0.05), True, False)
    return dve, proj, parts.save(folder / "parts" / "parts.safetensors")


@pytest.fixture(scope="session")
def page(tmp_path_factory):
    """``equinv view`` on 8 synthetic faces: hypercolumn, projected, NMF and DVE sources, NMF parts, predictions;
    returns its folder."""
    root = tmp_path_factory.mktemp("view")
    dve, proj, parts = write_models(root)
    pred, _ = write_predictions(root)
    out = root / "page"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EQUINV_CACHE", str(root / "cache"))
        rc = main(["view", "--backbone", "random", "--reference", REF, "--limit", "6", "--grid", str(GRID),
                   "--source", "hypercolumn,projected,nmf", "--projector", str(proj), "--dve", str(dve),
                   "--parts", str(parts), "--predictions", str(pred), "--out", str(out), "--device", "cpu", "--quiet"])
    assert rc == 0
    return out

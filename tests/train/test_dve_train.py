"""DVE training end to end on tiny synthetic data: pairs, checkpoint, time-budget stop, exact resume, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from equinv.augment import tps as T
from equinv.checkpoint import Checkpoint
from equinv.cli import main
from equinv.models.dve import load_dve
from equinv.train.dve import DVEConfig, make_pairs, train_dve

DATA = "synthetic:16?size=64"


def _cfg(out, **kw) -> DVEConfig:
    base = dict(data=[DATA], out=str(out), arch="smallnet", dim=8, size=24, input_size=16, batch_size=8,
                epochs=1, log_every=1, ckpt_every=100)
    return DVEConfig(**{**base, **kw})


def test_pair_grid_is_the_cropped_warp_map():
    imgs = (torch.rand(2, 3, 34, 34) * 255).to(torch.uint8)
    x1, x2, grid = make_pairs(imgs, 24, 24, torch.Generator().manual_seed(3))
    pair = T.dve_pair(imgs.float() / 255, torch.Generator().manual_seed(3))
    assert x1.shape == x2.shape == (2, 3, 24, 24)
    assert torch.allclose(grid, T.crop_map(pair.grid, 5), atol=1e-4)  # view1 px → view2 px after the slice
    y1, _, g16 = make_pairs(imgs, 24, 16, torch.Generator().manual_seed(3))
    assert y1.shape == (2, 3, 16, 16) and g16.shape == (2, 16, 16, 2)
    # pixel-centre rescaling of the same map: 16-px pixel u ↔ 24-px (u + ½)·1.5 − ½
    assert torch.allclose((g16 + 0.5) * 1.5 - 0.5, T.map_points(pair.params2, (torch.stack(torch.meshgrid(
        torch.arange(16.0), torch.arange(16.0), indexing="xy"), -1).reshape(-1, 2) + 0.5) * 1.5 - 0.5 + 5, 34, 34
    ).reshape(2, 16, 16, 2) - 5, atol=1e-4)


def test_train_checkpoint_budget_stop_and_exact_resume(tmp_path):
    full = train_dve(_cfg(tmp_path / "a"), progress=False)  # 16 images / batch 8 = 2 steps
    ck = Checkpoint(full / "checkpoints" / "last.safetensors")
    assert ck.meta["global_step"] == 2 and ck.meta["epoch"] == 2 and ck.meta["step_in_epoch"] == 0
    rows = [json.loads(x) for x in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and all(r["loss"] > 0 for r in rows)
    assert rows[0]["lr"] == 1e-3 and ck.optimizer["param_groups"][1]["lr"] == 1e-5  # smallnet bias lr
    assert any((full / "tb").iterdir())
    net, meta = load_dve(full / "descriptor.safetensors")
    assert meta["arch"] == "smallnet" and meta["dim"] == 8 and meta["input_size"] == 16 and meta["finished"]

    # a tiny budget stops after the first step with a checkpoint at the exact position ...
    part = train_dve(_cfg(tmp_path / "b", max_minutes=1e-9), progress=False)
    ck_b = Checkpoint(part / "checkpoints" / "last.safetensors")
    assert ck_b.meta["global_step"] == 1 and ck_b.meta["step_in_epoch"] == 1
    # ... and resuming replays the rest to identical weights
    cfg = DVEConfig.load(part / "config.json")
    cfg.max_minutes = None
    train_dve(cfg, resume=True, progress=False)
    wa, wb = ck.model, Checkpoint(part / "checkpoints" / "last.safetensors").model
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


def test_cli_runs_and_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "c"
    args = ["pretrain-dve", "--data", DATA, "--arch", "smallnet", "--dim", "4", "--size", "24", "--input-size",
            "16", "--batch-size", "16", "--epochs", "1", "--out", str(out), "--quiet"]
    assert main(args) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "smallnet" and cfg["batch_size"] == 16 and cfg["normalize_vectors"] is False
    assert cfg["milestones"] == [70, 90]
    assert main(args) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main(["pretrain-dve", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0
    assert Checkpoint(out / "checkpoints" / "last.safetensors").meta["global_step"] == 2


def test_config_defaults_per_arch():
    hg = DVEConfig(data=["x"], arch="hourglass").resolved()
    assert (hg.batch_size, hg.input_size, hg.normalize_vectors, hg.bias_lr) == (16, 96, True, None)
    assert hg.milestones == [50, 100] and hg.lr_at(50, 1e-3) == 1e-3 and hg.lr_at(51, 1e-3) == pytest.approx(1e-4)
    sn = DVEConfig(data=["x"], arch="smallnet").resolved()
    assert (sn.batch_size, sn.input_size, sn.normalize_vectors, sn.bias_lr) == (32, 70, False, 1e-5)
    assert sn.lr_at(70, 1.0) == 1.0 and sn.lr_at(71, 1.0) == pytest.approx(0.1)
    assert sn.lr_at(91, 1.0) == pytest.approx(0.01)

"""Training guards: options refused before any work, divergence stopped with the last good checkpoint kept."""

from __future__ import annotations

import math

import pytest
import torch

from equinv.checkpoint import Checkpoint
from equinv.cli import main
from equinv.errors import InputError
from equinv.train.dve import DVEConfig, train_dve
from equinv.train.guards import FiniteGuard, TrainingError
from equinv.train.pretrain import PretrainConfig
from equinv.train.projector import ProjectConfig, train_projector

DATA = "synthetic:16?size=64"


def _dve(out, **kw) -> DVEConfig:
    base = dict(data=[DATA], out=str(out), arch="smallnet", dim=8, size=24, input_size=16, batch_size=8,
                epochs=2, log_every=1, ckpt_every=100)
    return DVEConfig(**{**base, **kw})


@pytest.mark.parametrize("cfg, flag", [
    (PretrainConfig(data=["x"], epochs=0), "--epochs must be an integer >= 1, got 0"),
    (PretrainConfig(data=["x"], batch_size=0), "--batch-size"),
    (PretrainConfig(data=["x"], lr=-0.1), "--lr must be a finite number >= 0"),
    (PretrainConfig(data=["x"], lr=math.nan), "--lr"),
    (PretrainConfig(data=["x"], lr=math.inf), "--lr"),
    (PretrainConfig(data=["x"], temperature=0.0), "--temperature must be a finite number > 0"),
    (PretrainConfig(data=["x"], momentum=1.5), r"--momentum must be in \[0, 1\]"),
    (PretrainConfig(data=["x"], momentum=math.nan), "--momentum"),
    (PretrainConfig(data=["x"], queue=8, batch_size=16), "--queue 8 is smaller than --batch-size 16"),
    (PretrainConfig(data=["x"], max_minutes=-1.0), "--max-minutes"),
    (PretrainConfig(data=[]), "no training data"),
    (DVEConfig(data=["x"], arch="smallnet", lr=math.nan).resolved(), "--lr"),
    (DVEConfig(data=["x"], arch="smallnet", epochs=0).resolved(), "--epochs"),
    (DVEConfig(data=["x"], arch="smallnet", batch_size=0).resolved(), "--batch-size"),
    (ProjectConfig(beta1=1.0), r"--beta1 must be in \[0, 1\)"),
    (ProjectConfig(temperature=-7.0), "--temperature"),
    (ProjectConfig(batch_size=0), "--batch-size"),
    (ProjectConfig(val_pairs=0), "--val-pairs"),
])
def test_nonsensical_options_refused(cfg, flag):
    with pytest.raises(InputError, match=flag):
        cfg.validate()


def test_valid_defaults_pass():
    PretrainConfig(data=["x"]).validate()
    PretrainConfig(data=["x"], lr=0.0).validate()  # lr 0: a frozen run (checks an initialisation)
    DVEConfig(data=["x"]).resolved().validate()
    ProjectConfig().validate()


def test_refused_before_any_file_is_written(tmp_path):
    with pytest.raises(InputError, match="--epochs"):
        train_dve(_dve(tmp_path / "a", epochs=0), progress=False)
    assert not (tmp_path / "a").exists()
    # a dataset smaller than one batch: a run of zero steps, refused before config.json
    with pytest.raises(InputError, match="only 16 images for a batch of 32"):
        train_dve(_dve(tmp_path / "b", batch_size=32), progress=False)
    assert not (tmp_path / "b" / "config.json").exists()
    assert main(["pretrain", "--data", DATA, "--lr", "nan", "--out", str(tmp_path / "c"), "--quiet"]) == 2


def test_finite_guard_flags_loss_and_weights():
    g = FiniteGuard("cpu")
    net = torch.nn.Linear(2, 2)
    g.observe(torch.tensor(1.0))
    assert not g.diverged(net)
    with torch.no_grad():
        net.weight[0, 0] = math.inf
    assert g.diverged(net) and not g.diverged()
    g.observe(torch.tensor(math.nan))
    g.observe(torch.tensor(2.0))  # a later finite loss does not clear it
    assert g.diverged()


def test_injected_nan_stops_with_last_good_checkpoint(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EQUINV_TEST_NAN_AT_STEP", "3")  # 2 steps per epoch: the last checkpoint is after epoch 1
    with pytest.raises(TrainingError, match=r"non-finite .* by step 3; .*last good checkpoint .*last.safetensors"):
        train_dve(_dve(tmp_path / "a"), progress=False)
    ck = Checkpoint(tmp_path / "a" / "checkpoints" / "last.safetensors")
    assert ck.meta["global_step"] == 2 and all(bool(v.isfinite().all()) for v in ck.model.values())
    assert not (tmp_path / "a" / "descriptor.safetensors").exists()
    # through the CLI: one line, exit 2, no traceback
    args = ["pretrain-dve", "--data", DATA, "--arch", "smallnet", "--dim", "8", "--size", "24", "--input-size", "16",
            "--batch-size", "8", "--epochs", "2", "--out", str(tmp_path / "b"), "--quiet"]
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("equinv: error: ") and "non-finite" in err
    assert not (tmp_path / "b" / "descriptor.safetensors").exists()


def test_diverging_learning_rate_stops(tmp_path):
    with pytest.raises(TrainingError, match="non-finite"):
        train_dve(_dve(tmp_path / "a", lr=1e30, bias_lr=1e30, epochs=4, ckpt_every=1), progress=False)
    ck = Checkpoint(tmp_path / "a" / "checkpoints" / "last.safetensors")
    assert all(bool(v.isfinite().all()) for v in ck.model.values())
    assert not (tmp_path / "a" / "descriptor.safetensors").exists()


def test_projector_nan_keeps_best_from_finite_weights(tmp_path, monkeypatch):
    cfg = ProjectConfig(backbone="random", data="synthetic:16?size=64", val="synthetic:8?size=64&seed=1",
                        val_pairs=4, batch_size=8, epochs=2, dim=8, device="cpu", log_every=1, out=str(tmp_path / "p"))
    monkeypatch.setenv("EQUINV_TEST_NAN_AT_STEP", "3")  # 16 images / batch 8: the first step of epoch 2
    with pytest.raises(TrainingError, match="by step 3"):
        train_projector(cfg, progress=False)
    for name in ("best", "last"):
        ck = Checkpoint(tmp_path / "p" / "checkpoints" / f"{name}.safetensors")
        assert ck.meta["epoch"] == 1 and all(bool(v.isfinite().all()) for v in ck.model.values())

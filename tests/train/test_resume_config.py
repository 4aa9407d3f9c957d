"""``--resume RUN`` with other options: what may change is applied and reported, the rest is refused."""

from __future__ import annotations

import pytest

from equinv.cli import main
from equinv.errors import InputError
from equinv.train.dve import DVEConfig
from equinv.train.pretrain import PretrainConfig
from equinv.train.projector import ProjectConfig


def _saved(tmp_path, cfg):
    run = tmp_path / "run"
    run.mkdir(parents=True)
    cfg.save(run / "config.json")
    return run


def test_safe_changes_applied_and_reported(tmp_path, capsys):
    run = _saved(tmp_path, PretrainConfig(data=["synthetic:8"], epochs=2, max_minutes=30.0, lr=0.1, out="elsewhere"))
    cfg = PretrainConfig.resume(run, {"epochs": 5, "device": "cpu", "lr": 0.1, "data": ["synthetic:8"]})
    assert (cfg.epochs, cfg.device, cfg.lr, cfg.out) == (5, "cpu", 0.1, str(run))
    assert cfg.max_minutes is None  # a budget belongs to one invocation
    out = capsys.readouterr().out
    assert out == "resuming with --epochs 2 -> 5, --device None -> cpu\n"  # the same lr and data are no change
    assert PretrainConfig.resume(run, {"max_minutes": 3.0}).max_minutes == 3.0
    assert PretrainConfig.resume(run, {}).epochs == 2 and capsys.readouterr().out.count("\n") == 1


def test_defining_options_refused_with_their_flags(tmp_path):
    run = _saved(tmp_path, PretrainConfig(data=["synthetic:8"], batch_size=16, queue=32))
    with pytest.raises(InputError, match=r"cannot change --batch-size 32 \(run: 16\), --queue 64 \(run: 32\) "
                                         r"when resuming"):
        PretrainConfig.resume(run, {"batch_size": 32, "queue": 64, "epochs": 9})
    with pytest.raises(InputError, match="--data"):
        PretrainConfig.resume(run, {"data": ["synthetic:9"]})
    with pytest.raises(InputError, match="--queue: not an option of a DVE run"):
        DVEConfig.resume(_saved(tmp_path / "d", DVEConfig(data=["x"]).resolved()), {"queue": 3})
    prun = _saved(tmp_path / "p", ProjectConfig(dim=16))
    assert ProjectConfig.resume(prun, {"epochs": 4, "match_batch": 2}).epochs == 4
    with pytest.raises(InputError, match="--dim 32"):
        ProjectConfig.resume(prun, {"dim": 32})


def test_cli_resume_passes_only_given_flags(tmp_path, capsys):
    out = tmp_path / "dve"
    args = ["pretrain", "--method", "dve", "--arch", "smallnet", "--data", "synthetic:16?size=64", "--size", "24",
            "--dim", "8", "--batch-size", "8", "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    capsys.readouterr()
    assert main(["pretrain", "--resume", str(out), "--lr", "0.5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--lr 0.5 (run: 0.001)" in err and str(out) in err
    assert main(["pretrain", "--resume", str(out), "--epochs", "2", "--arch", "smallnet", "--quiet"]) == 0
    assert "resuming with --epochs 1 -> 2" in capsys.readouterr().out
    assert main(["pretrain-dve", "--resume", str(out), "--batch-size", "4", "--quiet"]) == 2
    assert "--batch-size 4 (run: 8)" in capsys.readouterr().err
    # fewer epochs than the run has done: refused, and the run's config.json is left as it was
    assert main(["pretrain", "--resume", str(out), "--epochs", "1", "--quiet"]) == 2
    assert "--epochs 1 is fewer than the 2 epochs this run has started" in capsys.readouterr().err
    assert DVEConfig.load(out / "config.json").epochs == 2

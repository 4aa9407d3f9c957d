import json

import pytest
import torch

from equinv.checkpoint import Checkpoint
from equinv.cli import main
from equinv.errors import InputError
from equinv.train.projector import ProjectConfig, load_projector

DATA = "synthetic:32?size=64"
VAL = "synthetic:8?size=64&seed=1"


def _args(out, *extra):
    return ["project", "--backbone", "random", "--arch", "resnet18", "--data", DATA, "--val", VAL,
            "--val-pairs", "4", "--batch-size", "16", "--device", "cpu", "--out", str(out), "--quiet", *extra]


def test_project_cli_two_epochs_then_resume(tmp_path, capsys):
    run = tmp_path / "run"
    assert main(_args(run, "--epochs", "2", "--dim", "16")) == 0
    out = capsys.readouterr().out
    assert "epoch 1/2" in out and "epoch 2/2" in out and "match same" in out
    ck = run / "checkpoints"
    assert (ck / "best.safetensors").is_file() and (ck / "last.safetensors").is_file()
    last = Checkpoint(ck / "last.safetensors")
    assert last.meta["epoch"] == 2 and last.optimizer is not None
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    vals = [r["val"] for r in rows if "val" in r]
    assert len(vals) == 2 and all(v["n_pairs"] == 4 for v in vals)
    best = min(vals, key=lambda v: v["match_error_diff"])
    assert last.meta["best"]["match_error_diff"] == pytest.approx(best["match_error_diff"])
    cfg = ProjectConfig.load(run / "config.json")
    assert cfg.dim == 16 and cfg.loss_temperature == 7.0 and cfg.use_augment
    proj, _ = load_projector(run)
    y = proj([torch.randn(1, c, 3, 3) for c in proj.channels], 6)
    assert y.shape == (1, 16, 6, 6)
    # resume: one more epoch only
    assert main(["project", "--resume", str(run), "--epochs", "3", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "epoch 3/3" in out and "epoch 1/" not in out
    assert Checkpoint(ck / "last.safetensors").meta["epoch"] == 3
    # an existing run is not overwritten
    assert main(_args(run, "--epochs", "1")) == 2


def test_project_paper_mode_no_augment_cached(tmp_path, capsys):
    run = tmp_path / "paper"
    assert main(_args(run, "--epochs", "1", "--mode", "paper", "--dim", "8", "--max-images", "16")) == 0
    cfg = ProjectConfig.load(run / "config.json")
    assert cfg.mode == "paper" and not cfg.use_augment and cfg.loss_power == 1.0
    assert Checkpoint(run / "checkpoints" / "best.safetensors").model["conv.conv.weight"].shape[0] == 8
    assert "conv.conv.bias" not in Checkpoint(run / "checkpoints" / "last.safetensors").model


def test_project_refuses_test_split(tmp_path, capsys):
    assert main(_args(tmp_path / "x", "--val", "celeba:/nowhere?split=mafl_test")) == 2


def test_feature_cache_hits_and_budget():
    from equinv.train.projector import FeatureCache

    calls = []

    def compute(idx):
        calls.append(idx.tolist())
        return [idx.float()[:, None, None, None].expand(-1, 2, 3, 3).clone()]

    cache = FeatureCache(5, budget_gb=1.0)
    idx = torch.tensor([3, 1])
    a = cache.get(idx, lambda: compute(idx))
    b = cache.get(idx, lambda: compute(idx))
    assert len(calls) == 1 and torch.equal(a[0], b[0])
    cache.get(torch.tensor([0, 3]), lambda: compute(torch.tensor([0, 3])))
    assert len(calls) == 2
    tiny = FeatureCache(10**9, budget_gb=1e-6)
    tiny.get(idx, lambda: compute(idx))
    assert not tiny.enabled


def test_project_dve_mode_softmax_projector_resumes_exactly(tmp_path, capsys):
    """--mode dve: DVE's pairs and loss; the projector kind is recorded and read back; resume is exact."""
    whole, split = tmp_path / "whole", tmp_path / "split"
    extra = ("--mode", "dve", "--projector", "softmax", "--dim", "8", "--max-images", "32")
    assert main(_args(whole, "--epochs", "2", *extra)) == 0
    cfg = ProjectConfig.load(whole / "config.json")
    assert cfg.use_augment and cfg.loss_temperature == 20.0 and cfg.loss_power == 0.5
    assert cfg.projector_mode == "softmax"
    last = Checkpoint(whole / "checkpoints" / "last.safetensors")
    assert last.meta["projector"] == "softmax" and "conv.conv.bias" in last.model
    proj, c = load_projector(whole)
    assert proj.mode == "softmax" and c["mode"] == "dve"
    rows = [json.loads(line) for line in (whole / "log.jsonl").read_text().splitlines() if '"val"' in line]
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)
    # the same run killed at the end of epoch 2 (before its checkpoint) and resumed ends with the same weights
    from equinv.train.projector import ProjectMethod

    real = ProjectMethod.end_epoch

    def killed(self, epoch, engine):
        if epoch == 2:
            raise KeyboardInterrupt
        real(self, epoch, engine)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProjectMethod, "end_epoch", killed)
        assert main(_args(split, "--epochs", "2", *extra)) != 0  # the CLI reports the interrupt
    assert Checkpoint(split / "checkpoints" / "last.safetensors").meta["epoch"] == 1
    assert main(["project", "--resume", str(split), "--quiet"]) == 0
    other = Checkpoint(split / "checkpoints" / "last.safetensors").model
    assert all(torch.equal(last.model[k], other[k]) for k in last.model)


def test_project_dve_mode_learns_and_linear_is_its_default(tmp_path, capsys):
    run = tmp_path / "dve"
    assert main(_args(run, "--epochs", "3", "--mode", "dve", "--dim", "8", "--lr", "1e-2")) == 0
    assert Checkpoint(run / "checkpoints" / "last.safetensors").meta["projector"] == "linear"
    losses = [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines() if '"val"' in line]
    assert losses[-1] < losses[0]


def test_project_dve_mode_refuses_no_augment(tmp_path, capsys):
    assert main(_args(tmp_path / "x", "--mode", "dve", "--no-augment")) == 2
    assert "--no-augment does not apply" in capsys.readouterr().err


def test_project_trunk_lr_trains_trunk_and_every_reader_uses_it(tmp_path, capsys):
    """--trunk-lr: the trunk moves (BN statistics do not), the checkpoint carries it, the projected source and
    --backbone RUN read it, --init starts from a run, and a resume continues exactly."""
    from equinv.features.sources import build_source
    from equinv.features.spec import FeatureSpec
    from equinv.models.hypercolumn import frozen_trunk
    from equinv.models.projector import load_tuned_trunk, read_projector

    frozen = tmp_path / "frozen"
    assert main(_args(frozen, "--epochs", "1", "--dim", "8", "--mode", "dve", "--max-images", "16")) == 0
    assert load_tuned_trunk(frozen) is None and not (frozen / "backbone.safetensors").exists()
    tuned = tmp_path / "tuned"
    assert main(_args(tuned, "--epochs", "2", "--dim", "8", "--mode", "dve", "--max-images", "16",
                      "--init", str(frozen), "--trunk-lr", "1e-3")) == 0
    ck = Checkpoint(tuned / "checkpoints" / "last.safetensors")
    assert ck.meta["trunk"] == "tuned" and len(ck.optimizer["param_groups"]) == 2
    state = load_tuned_trunk(tuned)
    saved = read_projector(tuned)
    assert saved.trunk.keys() == state.keys() and torch.equal(saved.trunk["conv1.weight"], state["conv1.weight"])
    assert read_projector(frozen).trunk is None and saved.config["trunk_lr"] == 1e-3
    start = frozen_trunk("resnet18", None, seed=0).state_dict()
    assert not torch.equal(state["layer4.1.conv2.weight"], start["layer4.1.conv2.weight"])
    assert torch.equal(state["bn1.running_mean"], start["bn1.running_mean"])  # BN statistics frozen
    proj0, _ = load_projector(frozen)
    cfg = ProjectConfig.load(tuned / "config.json")
    assert cfg.trunk_lr == 1e-3 and cfg.init == str(frozen)
    # the projected source reads the tuned trunk whatever --backbone says; --backbone RUN is its hypercolumn
    src = build_source(FeatureSpec(source="projected", backbone="random", projector=str(tuned), grid=6))
    assert torch.equal(src.hypercolumn.extractor.state_dict()["layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    # a saved landmark model stores the source's state: the tuned trunk travels with it
    assert torch.equal(src.state_dict()["hypercolumn.extractor.layer4.1.conv2.weight"], state["layer4.1.conv2.weight"])
    from equinv.landmarks.fit import FitConfig, fit_model
    from equinv.landmarks.model import load_model

    model, _ = fit_model(FitConfig(train=DATA, val=VAL, features=FeatureSpec(source="projected", projector=str(tuned),
                                                                            grid=12), steps=5, n_heatmaps=2,
                                   device="cpu", head="regressor"))
    model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model").source.state_dict()["hypercolumn.extractor.layer4.1.conv2.weight"]
    assert torch.equal(loaded, state["layer4.1.conv2.weight"])
    with pytest.raises(InputError, match="fine-tuned trunk does not fit"):
        build_source(FeatureSpec(source="projected", arch="resnet34", projector=str(tuned), grid=6))
    hc = build_source(FeatureSpec(backbone=str(tuned)))
    assert torch.equal(hc.extractor.state_dict()["layer4.1.conv2.weight"],
                       Checkpoint(tuned / "checkpoints" / "best.safetensors").model["trunk.layer4.1.conv2.weight"])
    plain = build_source(FeatureSpec(source="projected", backbone="random", projector=str(frozen), grid=6))
    assert torch.equal(plain.hypercolumn.extractor.state_dict()["layer4.1.conv2.weight"],
                       start["layer4.1.conv2.weight"])
    # killed at the end of epoch 2 (before its checkpoint) and resumed: the weights of the run straight through
    from equinv.train.projector import ProjectMethod

    real = ProjectMethod.end_epoch

    def killed(self, epoch, engine):
        if epoch == 2:
            raise KeyboardInterrupt
        real(self, epoch, engine)

    split = tmp_path / "split"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ProjectMethod, "end_epoch", killed)
        assert main(_args(split, "--epochs", "2", "--dim", "8", "--mode", "dve", "--max-images", "16",
                          "--init", str(frozen), "--trunk-lr", "1e-3")) != 0
    assert main(["project", "--resume", str(split), "--quiet"]) == 0
    a = Checkpoint(split / "checkpoints" / "last.safetensors").model
    assert a.keys() == ck.model.keys() and all(torch.equal(a[k], ck.model[k]) for k in a)
    # --init starts from the frozen run's projector (at lr 0 it stays exactly that one)
    still = tmp_path / "still"
    assert main(_args(still, "--epochs", "1", "--dim", "8", "--mode", "dve", "--max-images", "16",
                      "--init", str(frozen), "--lr", "0")) == 0
    assert torch.equal(load_projector(still)[0].conv.conv.weight, proj0.conv.conv.weight)


def test_project_init_refuses_other_projector(tmp_path, capsys):
    run = tmp_path / "a"
    assert main(_args(run, "--epochs", "1", "--dim", "8", "--max-images", "16")) == 0
    capsys.readouterr()
    assert main(_args(tmp_path / "b", "--epochs", "1", "--dim", "16", "--init", str(run))) == 2
    assert "--init holds" in capsys.readouterr().err
    assert main(_args(tmp_path / "c", "--init", str(tmp_path / "nowhere"))) == 2
    capsys.readouterr()
    from equinv.models.backbones import save_backbone
    from equinv.models.hypercolumn import frozen_trunk

    save_backbone(frozen_trunk("resnet18", None, seed=1), tmp_path / "other.safetensors")
    args = _args(tmp_path / "d", "--epochs", "1", "--dim", "8", "--init", str(run))
    args[args.index("--backbone") + 1] = str(tmp_path / "other.safetensors")
    assert main(args) == 2
    assert "trained on the frozen backbone 'random'" in capsys.readouterr().err


def test_project_seed_never_changes_the_random_network():
    """--seed seeds the projector, not ``--backbone random``: matching and regression read the one random
    network (seed 0), so a projector trained with --seed 3 must have been trained on that one too."""
    from equinv.models.hypercolumn import frozen_trunk
    from equinv.train.projector import build_model

    ref = frozen_trunk("resnet18", None, seed=0).state_dict()
    hc3, proj3 = build_model(ProjectConfig(backbone="random", arch="resnet18", seed=3, dim=8), torch.device("cpu"))
    _, proj0 = build_model(ProjectConfig(backbone="random", arch="resnet18", seed=0, dim=8), torch.device("cpu"))
    got = hc3.extractor.state_dict()
    assert all(torch.equal(got[k], ref[k]) for k in ref if k in got) and "layer4.1.conv2.weight" in got
    assert not torch.equal(proj3.conv.conv.weight, proj0.conv.conv.weight)  # the projector's init does follow --seed

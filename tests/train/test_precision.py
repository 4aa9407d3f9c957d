"""``--precision bf16`` / ``--channels-last``: every trainer and the feature sources, numerics and exact resume."""

from __future__ import annotations

import json
import signal

import pytest
import torch
import torch.nn.functional as F

from equinv import precision as P
from equinv.checkpoint import Checkpoint
from equinv.cli import main
from equinv.errors import InputError
from equinv.features.sources import build_source
from equinv.features.spec import FeatureSpec
from equinv.models.moco import MoCo
from equinv.train.dve import DVEConfig, train_dve
from equinv.train.pretrain import PretrainConfig
from tests.train.test_pretrain import TINY, _run, _weights


def test_bf16_pretraining_keeps_fp32_state_and_resumes_exactly(tmp_path):
    common = [*TINY, "--epochs", "1", "--ckpt-every", "2", "--log-every", "1", "--precision", "bf16"]
    a = _run([*common, "--out", str(tmp_path / "a")])
    assert a.returncode == 0, a.stderr
    b = _run([*common, "--out", str(tmp_path / "b")], {"EQUINV_TEST_KILL_AT_STEP": "3"})
    assert b.returncode == -signal.SIGKILL
    r = _run(["pretrain", "--resume", str(tmp_path / "b"), "--quiet"])
    assert r.returncode == 0, r.stderr
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    for k in wa:
        assert wa[k].dtype in (torch.float32, torch.int64), k  # weights, BN statistics and queue stay fp32
        assert torch.equal(wa[k], wb[k]), k
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["precision"] == "bf16"
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert rows and all(torch.isfinite(torch.tensor(r["loss"])) for r in rows)


def test_bf16_moco_loss_and_gradients_track_fp32():
    torch.manual_seed(0)
    q, k = torch.randn(16, 3, 64, 64), torch.randn(16, 3, 64, 64)
    out = {}
    for prec in ("fp32", "bf16"):
        torch.manual_seed(1)
        m = P.prepare(MoCo("resnet18", queue_size=64, bn_groups=2).train(), prec)
        with P.autocast("cpu", prec):
            loss, stats = m(P.inputs(q, prec), P.inputs(k, prec))
        assert loss.dtype == torch.float32
        loss.backward()
        g = torch.cat([p.grad.flatten() for p in m.encoder_q.parameters() if p.grad is not None])
        out[prec] = (stats, g)
    (s32, g32), (s16, g16) = out["fp32"], out["bf16"]
    for k in ("pos_sim", "neg_sim"):  # mean cosines q·k, q·queue (the logits before 1/T)
        assert abs(float(s16[k]) - float(s32[k])) < 0.02, k
    # bf16 rounding accumulates through the backward pass (conv1's gradient agrees least, ~0.9 here)
    assert F.cosine_similarity(g32, g16, dim=0) > 0.85


def test_feature_sources_at_bf16_and_channels_last():
    x = torch.randn(2, 3, 64, 64)
    base = build_source(FeatureSpec(grid=16))
    ref = base.maps(x)
    cl = build_source(FeatureSpec(grid=16, channels_last=True))
    bf = build_source(FeatureSpec(grid=16, precision="bf16"))
    with torch.no_grad():
        for m32, mcl, mbf in zip(ref, cl.maps(x), bf.maps(x), strict=True):
            assert mcl.dtype == mbf.dtype == torch.float32 and mbf.is_contiguous()
            assert torch.allclose(m32, mcl, atol=1e-4, rtol=1e-4)  # only the rounding order differs
            assert F.cosine_similarity(m32, mbf, dim=1).mean() > 0.98
    # defaults stay out of records (old caches and model files keep their identity)
    assert "precision" not in FeatureSpec().as_dict() and "channels_last" not in FeatureSpec().as_dict()
    spec = FeatureSpec(precision="bf16", channels_last=True)
    assert FeatureSpec.from_dict(spec.as_dict()) == spec
    assert spec.identity() != FeatureSpec().identity()
    with pytest.raises(InputError, match="precision"):
        FeatureSpec(precision="fp16")


def test_bad_precision_is_one_line(capsys, tmp_path):
    assert main([*TINY, "--precision", "fp16", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "--precision" in err[-1] and "fp16" in err[-1]
    with pytest.raises(InputError, match="--precision"):
        PretrainConfig(data=["synthetic:8"], precision="half").validate()
    assert not (tmp_path / "x").exists()


def test_dve_and_projector_train_at_bf16(tmp_path, capsys):
    run = train_dve(DVEConfig(data=["synthetic:16?size=64"], out=str(tmp_path / "dve"), arch="smallnet", dim=8,
                              size=24, input_size=16, batch_size=8, epochs=1, log_every=1, precision="bf16"),
                    progress=False)
    ck = Checkpoint(run / "checkpoints" / "last.safetensors")
    assert all(t.dtype == torch.float32 for t in ck.model.values() if t.is_floating_point())
    assert main(["project", "--backbone", "random", "--arch", "resnet18", "--data", "synthetic:16?size=64",
                 "--val", "synthetic:8?size=64&seed=1", "--val-pairs", "4", "--batch-size", "8", "--device", "cpu",
                 "--epochs", "1", "--dim", "8", "--precision", "bf16", "--out", str(tmp_path / "proj"),
                 "--quiet"]) == 0
    assert "match same" in capsys.readouterr().out
    assert json.loads((tmp_path / "proj" / "config.json").read_text())["precision"] == "bf16"

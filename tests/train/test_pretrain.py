"""The pretraining engine end to end: CLI, exact resume after SIGKILL, torchrun with 2 processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from equinv.checkpoint import Checkpoint

TINY = [
    "pretrain",
    "--data", "synthetic:64?size=48", "--size", "32", "--arch", "resnet18", "--batch-size", "16",
    "--queue", "32", "--quiet",
]


def _run(args: list[str], env_extra: dict | None = None, torchrun: int = 0) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    if torchrun:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={torchrun}",
               "-m", "equinv", *args]
    else:
        cmd = [sys.executable, "-m", "equinv", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return Checkpoint(run / "checkpoints" / "last.safetensors").model


def test_killed_run_resumes_to_identical_weights(tmp_path):
    common = [*TINY, "--epochs", "2", "--ckpt-every", "2", "--log-every", "1"]
    a = _run([*common, "--out", str(tmp_path / "a")])
    assert a.returncode == 0, a.stderr
    b = _run([*common, "--out", str(tmp_path / "b")], {"EQUINV_TEST_KILL_AT_STEP": "7"})
    assert b.returncode == -signal.SIGKILL  # really killed, between checkpoints (last one at step 6)
    assert Checkpoint(tmp_path / "b" / "checkpoints" / "last.safetensors").meta["global_step"] == 6
    r = _run(["pretrain", "--resume", str(tmp_path / "b"), "--quiet"])
    assert r.returncode == 0, r.stderr
    assert "resuming" in r.stdout
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k  # queue, BN statistics and weights all identical
    assert (tmp_path / "b" / "backbone.safetensors").exists()
    cfg = json.loads((tmp_path / "a" / "config.json").read_text())
    assert cfg["arch"] == "resnet18" and cfg["batch_size"] == 16
    # a wall-clock budget stops at a checkpoint (here after the first step); --resume ends identical too
    c = _run([*common, "--out", str(tmp_path / "c"), "--max-minutes", "0"])
    assert c.returncode == 0, c.stderr
    assert "stopped at the budget" in c.stdout
    assert Checkpoint(tmp_path / "c" / "checkpoints" / "last.safetensors").meta["global_step"] == 1
    assert (tmp_path / "c" / "backbone.safetensors").exists()
    r = _run(["pretrain", "--resume", str(tmp_path / "c"), "--quiet"])
    assert r.returncode == 0, r.stderr
    wc = _weights(tmp_path / "c")
    assert all(torch.equal(wa[k], wc[k]) for k in wa)


def test_pretrain_writes_logs_checkpoints_and_refuses_to_overwrite(tmp_path):
    out = tmp_path / "run"
    r = _run([*TINY, "--epochs", "1", "--log-every", "1", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and {"loss", "lr", "img_per_s", "acc", "peak_mem_mb", "queue_norm"} <= rows[0].keys()
    assert list((out / "tb").glob("events.*"))
    again = _run([*TINY, "--epochs", "1", "--out", str(out)])
    assert again.returncode == 2 and "--resume" in again.stderr and "Traceback" not in again.stderr
    bad = _run(["pretrain", "--resume", str(tmp_path / "nothing")])
    assert bad.returncode == 2 and "config.json" in bad.stderr


def test_torchrun_two_processes(tmp_path):
    out = tmp_path / "ddp"
    r = _run([*TINY, "--epochs", "1", "--log-every", "1", "--out", str(out)], torchrun=2)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(rows) == 4  # 64 images / global batch 16; rank 0 logs alone
    ck = Checkpoint(out / "checkpoints" / "last.safetensors")
    assert ck.meta["epoch"] == 2 and ck.meta["global_step"] == 4


def test_dense_term_logs_both_losses_and_a_stopped_run_resumes_exactly(tmp_path):
    common = [*TINY, "--epochs", "1", "--ckpt-every", "2", "--log-every", "1", "--dense", "0.5", "--dense-points", "6"]
    a = _run([*common, "--out", str(tmp_path / "a")])
    assert a.returncode == 0, a.stderr
    rows = [json.loads(line) for line in (tmp_path / "a" / "log.jsonl").read_text().splitlines()]
    assert all(r["loss"] == pytest.approx(r["nce"] + 0.5 * r["dense"], rel=1e-5) for r in rows)
    assert json.loads((tmp_path / "a" / "config.json").read_text())["dense"] == 0.5
    assert any(k.startswith("dense_q.") for k in _weights(tmp_path / "a"))
    b = _run([*common, "--out", str(tmp_path / "b"), "--max-steps", "2"])
    assert b.returncode == 0, b.stderr
    r = _run(["pretrain", "--resume", str(tmp_path / "b"), "--max-steps", "4", "--quiet"])
    assert r.returncode == 0, r.stderr
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    bad = _run([*TINY, "--dense", "-1", "--out", str(tmp_path / "c")])
    assert bad.returncode == 2 and "--dense" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.realdata
@pytest.mark.slow
def test_training_lowers_the_loss_on_real_birds(tmp_path, shared_data):
    """Real unlabeled birds, the reference view chain, a small queue: 64 steps (~15 s on 2 cores), twice.

    The same run (same seed: same images, views and initial weights) at a vanishing learning rate is the
    baseline: its loss stays near ln(129) ≈ 4.9 as the queue fills with real keys, while training pulls it
    clearly lower (about 4.55 against 5.05 over epochs 5–8 at this size). The loss of one run alone hardly
    falls after its first epochs with the reference's per-group query BN, so a run is compared with its
    untrained twin, not with its own start.
    """
    def run(name: str, lr: str) -> torch.Tensor:
        out = tmp_path / name
        r = _run([
            "pretrain", "--data", f"folder:{shared_data / 'cub' / 'birds_unlabeled'}", "--max-images", "256",
            "--size", "32", "--arch", "resnet18", "--epochs", "8", "--batch-size", "32", "--queue", "128",
            "--lr", lr, "--momentum", "0.99", "--log-every", "1", "--quiet", "--out", str(out),
        ])
        assert r.returncode == 0, r.stderr
        lines = (out / "log.jsonl").read_text().splitlines()
        return torch.tensor([json.loads(line)["loss"] for line in lines]).reshape(8, 8).mean(1)

    trained, frozen = run("trained", "0.03"), run("frozen", "1e-9")
    assert trained[-4:].mean() < frozen[-4:].mean() - 0.2, (trained, frozen)


def test_init_from_torchvision_state_dict(tmp_path):
    import torchvision

    torch.manual_seed(5)
    tv = torchvision.models.resnet18()
    torch.save(tv.state_dict(), tmp_path / "imagenet_like.pth")
    out = tmp_path / "init"
    r = _run([*TINY, "--epochs", "1", "--init", str(tmp_path / "imagenet_like.pth"), "--lr", "0",
              "--out", str(out)])
    assert r.returncode == 0, r.stderr
    w = _weights(out)
    # with lr 0 the query trunk keeps exactly the given weights
    assert torch.equal(w["encoder_q.backbone.conv1.weight"], tv.state_dict()["conv1.weight"])
    # the key encoder too, up to the rounding of its momentum updates (0.999·w + 0.001·w)
    assert torch.allclose(w["encoder_k.backbone.layer4.1.conv2.weight"], tv.state_dict()["layer4.1.conv2.weight"])


def test_pretrain_method_dve_and_its_resume(tmp_path, capsys):
    from equinv.cli import main

    out = tmp_path / "dve"
    args = ["pretrain", "--method", "dve", "--arch", "smallnet", "--data", "synthetic:16?size=64", "--size", "24",
            "--dim", "8", "--batch-size", "8", "--epochs", "1", "--quiet", "--out", str(out)]
    assert main(args) == 0
    assert (out / "descriptor.safetensors").exists()
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["arch"] == "smallnet" and cfg["dim"] == 8
    assert main(["pretrain", "--resume", str(out), "--epochs", "2", "--quiet"]) == 0  # detected as a DVE run
    assert Checkpoint(out / "checkpoints" / "last.safetensors").meta["epoch"] == 3
    assert main(["pretrain", "--method", "dve", "--arch", "resnet18", "--data", "synthetic:4?size=64"]) == 2
    assert main(["pretrain", "--arch", "hourglass", "--data", "synthetic:4?size=64"]) == 2
    assert "--method dve" in capsys.readouterr().err


def test_dense_aux_needs_the_term(tmp_path):
    from equinv.errors import InputError
    from equinv.train.pretrain import PretrainConfig

    with pytest.raises(InputError, match="--dense-aux"):
        PretrainConfig(data=["synthetic:8"], dense_aux=True).validate()
    PretrainConfig(data=["synthetic:8"], dense=1.0, dense_aux=True).validate()
    bad = _run([*TINY, "--dense-aux", "--out", str(tmp_path / "x")])
    assert bad.returncode == 2 and "--dense W" in bad.stderr and "Traceback" not in bad.stderr

"""The training engine across processes: one run per directory, log continuation, byte-identical files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

from equinv.checkpoint import Checkpoint
from equinv.safefile import write_safetensors
from equinv.train.dve import DVEConfig, train_dve
from equinv.train.pretrain import PretrainConfig, pretrain
from equinv.train.projector import ProjectConfig, train_projector

DVE = ["pretrain-dve", "--data", "synthetic:32?size=64", "--arch", "smallnet", "--dim", "8", "--size", "24",
       "--input-size", "16", "--batch-size", "8", "--log-every", "1", "--quiet"]


def _start(args: list[str], env_extra: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "equinv", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _locked_and_paused(p: subprocess.Popen, run: Path) -> None:
    """Wait until ``p`` holds the lock of ``run``, then stop it (SIGSTOP) so it surely still holds it."""
    for _ in range(1200):
        lock = run / ".lock"
        if lock.is_file() and lock.read_text().strip() == str(p.pid):
            os.kill(p.pid, signal.SIGSTOP)
            return
        assert p.poll() is None, p.communicate()
        time.sleep(0.05)
    raise AssertionError("the first run never took the lock")


def _contend(args: list[str], run: Path) -> None:
    """Start ``args`` twice on ``run``: the second stops at once naming the first, which ends intact."""
    first = _start(args)
    _locked_and_paused(first, run)
    try:
        t0 = time.monotonic()
        second = _start(args)
        _, err = second.communicate(timeout=300)
        assert second.returncode == 2, err
        assert err.count("\n") == 1 and f"{run}: in use by process {first.pid}" in err and "Traceback" not in err
        assert time.monotonic() - t0 < 120  # no waiting for the first run (generous: a loaded machine starting torch)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err


def test_two_processes_on_one_directory(tmp_path):
    run = tmp_path / "run"
    _contend([*DVE, "--epochs", "2", "--out", str(run)], run)
    assert Checkpoint(run / "checkpoints" / "last.safetensors").meta["global_step"] == 8
    assert (run / "descriptor.safetensors").is_file()
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))  # the first run is intact
    # two concurrent resumes: the same
    _contend(["pretrain-dve", "--resume", str(run), "--epochs", "3", "--quiet"], run)
    assert Checkpoint(run / "checkpoints" / "last.safetensors").meta["global_step"] == 12


def _scalar_steps(tb: Path, tag: str) -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb))
    acc.Reload()
    return [e.step for e in acc.Scalars(tag)]


def test_killed_run_log_continues_without_repeated_steps(tmp_path):
    run = tmp_path / "run"
    killed = _start([*DVE, "--epochs", "2", "--ckpt-every", "2", "--out", str(run)], {"EQUINV_TEST_KILL_AT_STEP": "7"})
    killed.communicate(timeout=600)
    assert killed.returncode == -signal.SIGKILL
    assert Checkpoint(run / "checkpoints" / "last.safetensors").meta["global_step"] == 6
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 8))  # step 7 is past the checkpoint: replayed
    resumed = _start(["pretrain-dve", "--resume", str(run), "--quiet"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    rows = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 9))
    assert _scalar_steps(run / "tb", "dve/loss") == list(range(1, 9))


def _run_twice(tmp_path: Path, name: str, fn) -> list[tuple[Path, Path]]:
    """Run ``fn(out)`` twice in the same directory (the first copy moved aside); pairs of .safetensors."""
    out = tmp_path / name
    fn(out)
    out.rename(tmp_path / f"{name}_1")
    fn(out)
    files = sorted(p.relative_to(out) for p in out.rglob("*.safetensors"))
    assert files and files == sorted(p.relative_to(tmp_path / f"{name}_1")
                                     for p in (tmp_path / f"{name}_1").rglob("*.safetensors"))
    return [(tmp_path / f"{name}_1" / f, out / f) for f in files]


def test_identical_runs_write_identical_bytes(tmp_path):
    runs = {
        "moco": lambda out: pretrain(PretrainConfig(data=["synthetic:32?size=48"], out=str(out), size=32,
                                                    batch_size=16, queue=32, epochs=1, save_every=1), progress=False),
        "dve": lambda out: train_dve(DVEConfig(data=["synthetic:16?size=64"], out=str(out), arch="smallnet", dim=8,
                                               size=24, input_size=16, batch_size=8, epochs=1, save_every=1),
                                     progress=False),
        "proj": lambda out: train_projector(ProjectConfig(data="synthetic:16?size=64", val="synthetic:8?size=64&seed=1",
                                                          val_pairs=4, batch_size=8, epochs=1, dim=8, device="cpu",
                                                          out=str(out)), progress=False),
    }
    names = set()
    for name, fn in runs.items():
        for a, b in _run_twice(tmp_path, name, fn):
            names.add(b.name)
            assert a.read_bytes() == b.read_bytes(), b
    assert {"last.safetensors", "epoch_0001.safetensors", "backbone.safetensors", "descriptor.safetensors",
            "best.safetensors"} <= names


def test_safetensors_metadata_order_is_fixed(tmp_path):
    t = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.float16)}
    meta = {k: json.dumps({"v": i}) for i, k in enumerate("zyxwvutsrq")}
    blobs = {write_safetensors(tmp_path / f"{i}.safetensors", t, dict(reversed(meta.items()) if i % 2 else meta.items())
                               ).read_bytes() for i in range(8)}
    assert len(blobs) == 1  # safetensors alone orders metadata differently from call to call
    assert not list(tmp_path.glob(".*tmp*"))

"""Distributed helpers: the collective timeout, a hung rank ending the job, workers dying with the launcher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from equinv import distributed as D
from equinv.errors import InputError

TINY = ["pretrain", "--data", "synthetic:64?size=48", "--size", "32", "--arch", "resnet18", "--batch-size", "16",
        "--queue", "32", "--log-every", "1", "--quiet"]


def test_timeout_from_the_environment(monkeypatch):
    monkeypatch.delenv(D.TIMEOUT_ENV, raising=False)
    assert D.timeout_s() == D.DEFAULT_TIMEOUT_S
    monkeypatch.setenv(D.TIMEOUT_ENV, "12.5")
    assert D.timeout_s() == 12.5
    for bad in ("abc", "0", "-3", "inf", "nan"):
        monkeypatch.setenv(D.TIMEOUT_ENV, bad)
        with pytest.raises(InputError, match=D.TIMEOUT_ENV):
            D.timeout_s()


def _torchrun(args: list[str], env_extra: dict, log: Path) -> subprocess.Popen:
    """torchrun with 2 processes; output to the file ``log`` (workers share it: no pipe to wait on)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "equinv", *args]
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, env=env, stdout=fh, stderr=subprocess.STDOUT)


def _workers(launcher: int) -> dict[int, int]:
    """``{rank: pid}`` of the workers torchrun started (children of the launcher with a RANK)."""
    found = {}
    for task in Path(f"/proc/{launcher}/task").iterdir():
        for pid in (task / "children").read_text().split():
            try:
                env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            ranks = [int(e[5:]) for e in env if e.startswith(b"RANK=")]
            if ranks:
                found[ranks[0]] = int(pid)
    return found


def _training(launcher: subprocess.Popen, run: Path) -> dict[int, int]:
    """Wait until rank 0 holds the run's lock and has logged a step (so the data-preparation barrier, whose wait
    may take ``PREPARE_FACTOR`` timeouts, is behind both ranks); the workers' pids by rank."""
    for _ in range(2400):
        assert launcher.poll() is None, "torchrun ended early"
        lock, log = run / ".lock", run / "log.jsonl"
        workers = _workers(launcher.pid)
        if (len(workers) == 2 and lock.is_file() and lock.read_text().strip() == str(workers[0])
                and log.is_file() and log.stat().st_size > 0):
            return workers
        time.sleep(0.05)
    raise AssertionError("training never started")


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_hung_rank_ends_the_job(tmp_path):
    run = tmp_path / "run"
    job = _torchrun([*TINY, "--epochs", "50", "--out", str(run)], {D.TIMEOUT_ENV: "10"}, tmp_path / "log")
    workers = _training(job, run)
    os.kill(workers[1], signal.SIGSTOP)  # rank 1 hangs
    try:
        job.wait(timeout=120)  # a collective times out after 10 s
    finally:
        for pid in workers.values():
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)
    assert job.returncode != 0
    err = (tmp_path / "log").read_text()
    assert f"equinv: error: rank 0: a collective operation failed (another rank hung past {D.TIMEOUT_ENV}=10 s" in err


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_launcher_dies(tmp_path):
    run = tmp_path / "run"
    job = _torchrun([*TINY, "--epochs", "50", "--out", str(run)], {}, tmp_path / "log")
    workers = _training(job, run)
    os.kill(job.pid, signal.SIGKILL)
    job.wait()
    deadline = time.monotonic() + 60  # without PDEATHSIG the workers would train on (200 steps)
    while time.monotonic() < deadline and not all(_gone(p) for p in workers.values()):
        time.sleep(0.2)
    alive = [p for p in workers.values() if not _gone(p)]
    for pid in alive:
        os.kill(pid, signal.SIGKILL)
    assert not alive, "workers outlived their launcher"

"""Run directories: the exclusive lock, fresh/resume rules, stale temporary files, log continuation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from equinv.errors import InputError
from equinv.train.rundir import RunDir
from equinv.train.runlog import RunLog, truncate_log

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
if sys.argv[2] == "own":
    os.ftruncate(fd, 0); os.write(fd, f"{os.getpid()}\\n".encode())
print("locked", flush=True)
time.sleep(120)
"""


def _holder(lock, mode: str) -> subprocess.Popen:
    """A process that holds ``lock`` (writing its own pid there with mode ``own``) until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(lock), mode], stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "locked"
    return p


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_exclusive_and_names_the_holder(tmp_path):
    run = RunDir(tmp_path / "run").claim(resume=False)
    assert (tmp_path / "run" / ".lock").read_text().strip() == str(os.getpid())
    with pytest.raises(InputError, match=rf"run: in use by process {os.getpid()}"):
        RunDir(tmp_path / "run").claim(resume=True)
    run.release()
    RunDir(tmp_path / "run").claim(resume=True).release()  # free again once released


def test_lock_held_by_another_live_process(tmp_path):
    (tmp_path / "run").mkdir()
    holder = _holder(tmp_path / "run" / ".lock", "own")
    try:
        with pytest.raises(InputError, match=f"in use by process {holder.pid}"):
            RunDir(tmp_path / "run").claim(resume=False)
    finally:
        holder.kill()
        holder.wait()
    RunDir(tmp_path / "run").claim(resume=False).release()  # the kernel dropped the lock with its holder


def test_lock_of_a_dead_pid_is_taken_over(tmp_path):
    """A lock still held (a forked child kept the file open) but recorded for a dead pid is taken over."""
    lock = tmp_path / "run" / ".lock"
    lock.parent.mkdir()
    lock.write_text(f"{_dead_pid()}\n")
    orphan = _holder(lock, "keep")  # holds the flock without writing its pid
    try:
        run = RunDir(tmp_path / "run").claim(resume=False)
        assert lock.read_text().strip() == str(os.getpid())
        with pytest.raises(InputError, match=f"in use by process {os.getpid()}"):
            RunDir(tmp_path / "run").claim(resume=True)
        run.release()
    finally:
        orphan.kill()
        orphan.wait()


def test_fresh_run_refused_where_a_run_is(tmp_path):
    rd = RunDir(tmp_path / "a")
    rd.claim(resume=False).release()  # an empty directory (or one with only a lock) is fine
    (tmp_path / "a" / "config.json").write_text("{}")
    with pytest.raises(InputError, match=r"already holds a run; use --resume .*a or another --out"):
        rd.claim(resume=False)
    rd.claim(resume=True).release()
    (tmp_path / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "b" / "checkpoints" / "epoch_0001.safetensors").write_bytes(b"x")
    with pytest.raises(InputError, match="already holds a run"):
        RunDir(tmp_path / "b").claim(resume=False)


def test_stale_temporaries_removed_only_under_the_lock(tmp_path):
    ck = tmp_path / "run" / "checkpoints"
    ck.mkdir(parents=True)
    stale = [ck / ".last.safetensors.tmp123", tmp_path / "run" / ".config.json.tmp9", tmp_path / "run" / "config.tmp",
             tmp_path / "run" / ".backbone.safetensors.tmp77"]
    for p in stale:
        p.write_bytes(b"partial")
    (ck / "last.safetensors").write_bytes(b"complete")
    (tmp_path / "run" / "config.json").write_text("{}")
    holder = _holder(tmp_path / "run" / ".lock", "own")
    try:
        with pytest.raises(InputError, match="in use"):
            RunDir(tmp_path / "run").claim(resume=True)
        assert all(p.exists() for p in stale)  # another process holds the run: nothing touched
    finally:
        holder.kill()
        holder.wait()
    RunDir(tmp_path / "run").claim(resume=True).release()
    assert not any(p.exists() for p in stale)
    assert (ck / "last.safetensors").read_bytes() == b"complete" and (tmp_path / "run" / "config.json").exists()


def test_log_continues_from_the_checkpoint(tmp_path):
    log = tmp_path / "log.jsonl"
    rows = [{"step": s, "epoch": 1 + (s > 2), "loss": 1.0} for s in (1, 2)] + [{"epoch": 1, "val": {}}]
    rows += [{"step": s, "epoch": 2, "loss": 1.0} for s in (3, 4)] + [{"epoch": 2, "val": {}}, {"step": 5}]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 6, "lo')  # cut short by a kill
    # a checkpoint after step 4 at the end of epoch 2 keeps everything up to it (epoch 2's line too)
    assert truncate_log(log, 4, 3) == 2
    assert [json.loads(x) for x in log.read_text().splitlines()] == rows[:-1]
    # a checkpoint after epoch 1 (step 2): epoch 2's lines go
    assert truncate_log(log, 2, 2) == 3
    assert [json.loads(x) for x in log.read_text().splitlines()] == rows[:3]
    RunLog(tmp_path, "x", enabled=True, resume_at=(0, 1)).close()  # a resume without checkpoint starts over
    assert log.read_text() == ""

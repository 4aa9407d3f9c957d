"""A run directory held by one process at a time, with the rules for starting and resuming in it.

Layout (every trainer)::

    RUN/.lock                         exclusive lock (fcntl.flock) holding the pid of the running process
    RUN/config.json                   the run's config (rewritten on resume)
    RUN/checkpoints/last.safetensors  model + optimizer + position
    RUN/checkpoints/*.safetensors     kept checkpoints (epoch_NNNN, best)
    RUN/tb/, RUN/log.jsonl            TensorBoard and one JSON line per logged step

The lock is taken for fresh runs and resumes alike and released when the process ends (the kernel
drops a flock with its holder). A second process on the same directory stops at once, naming the
holder's pid. A lock still held although its recorded pid is dead (a forked child of a killed run
kept the file open) is taken over by replacing the lock file.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from pathlib import Path

from equinv.errors import InputError
from equinv.safefile import stale_temporaries

#: How long a lock whose recorded holder is dead or unknown is watched before it is taken over
#: (a new holder writes its pid right after locking).
GRACE_S = 1.0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunDir:
    """``RUN/`` and its files; :meth:`claim` locks it for a fresh run or a resume."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config = self.path / "config.json"
        self.checkpoints = self.path / "checkpoints"
        self.last = self.checkpoints / "last.safetensors"
        self.log = self.path / "log.jsonl"
        self.tb = self.path / "tb"
        self.lock_file = self.path / ".lock"
        self._fd: int | None = None

    def holds_run(self) -> bool:
        """True when a run was started here (its config.json or any checkpoint exists)."""
        return self.config.is_file() or any(self.checkpoints.glob("*.safetensors"))

    def claim(self, resume: bool) -> RunDir:
        """Lock the directory, check it suits a fresh run or a resume, and remove stale temporary files."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.lock()
        try:
            if not resume and self.holds_run():
                raise InputError(f"already holds a run; use --resume {self.path} or another --out", self.path)
            for p in stale_temporaries(self.path) + stale_temporaries(self.checkpoints):
                p.unlink(missing_ok=True)  # left by a killed writer: never a complete file
        except BaseException:
            self.release()
            raise
        return self

    def lock(self) -> None:
        """Take the exclusive lock or raise an InputError naming the process that holds it."""
        deadline = time.monotonic() + GRACE_S
        while True:
            fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:
                if e.errno not in (errno.EWOULDBLOCK, errno.EACCES):
                    os.close(fd)
                    raise
                pid = self._holder(fd)
                if pid is not None and _alive(pid):
                    os.close(fd)
                    raise InputError(f"in use by process {pid} (lock {self.lock_file.name}); wait for it to end "
                                     "or stop it", self.path) from None
                if time.monotonic() < deadline:
                    os.close(fd)
                    time.sleep(0.1)
                    continue
                self._replace(fd)  # held, but its holder is gone: take it over
                continue
            if os.fstat(fd).st_ino != os.stat(self.lock_file).st_ino:  # replaced meanwhile: lock the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return

    @staticmethod
    def _holder(fd: int) -> int | None:
        text = os.pread(fd, 64, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else None

    def _replace(self, fd: int) -> None:
        try:
            if os.fstat(fd).st_ino == os.stat(self.lock_file).st_ino:
                self.lock_file.unlink()
        except FileNotFoundError:
            pass
        os.close(fd)

    def release(self) -> None:
        """Drop the lock (the file stays, with the last holder's pid)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunDir:
        return self

    def __exit__(self, *exc) -> None:
        self.release()

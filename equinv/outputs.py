"""Where a command writes: checked before any work, written atomically, write errors on one line.

* :func:`check_dir` / :func:`check_file`: an output location is refused with a one-line
  :class:`~equinv.errors.InputError` naming the flag when it cannot work: a file where a folder is
  needed (or the reverse), a device such as ``/dev/full``, a folder nobody can write in (permission,
  read-only file system, no space left), a file suffix the writer does not know, or an existing result
  that ``--force`` must confirm. The checks create nothing: the folder writability is probed with a
  temporary file in the nearest existing folder, which is what a root user or a read-only mount needs
  (``os.access`` answers yes to root).
* :func:`atomic_path` / :func:`write_text` / :func:`save_image`: a file is written under a temporary name
  beside its target (``.NAME.tmpPID``) and renamed over it, so a killed writer never leaves a half file
  under the real name.
* :func:`os_error_message`: the one line ``equinv`` prints for an ``OSError`` met while writing
  (``cannot write FILE: No space left on device``), or ``None`` for errors that are not about writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from equinv.errors import InputError

#: Temporary files are ``.NAME.tmpPID`` beside their target (stale ones are recognised by this infix).
TMP_INFIX = ".tmp"
#: Image files the figures and contact sheets can be written as.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
#: errno values that can only come from writing.
WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EFBIG})
#: errno values of a path that cannot be used (reading or writing), printed as ``PATH: reason``.
PATH_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOENT,
                         errno.ENAMETOOLONG, errno.ELOOP})


def tmp_path(path: Path) -> Path:
    """The temporary file a write of ``path`` goes through."""
    path = Path(path)
    return path.with_name(f".{path.name}{TMP_INFIX}{os.getpid()}")


def _reason(e: OSError) -> str:
    return e.strerror or os.strerror(e.errno or 0) or type(e).__name__


def _existing_ancestor(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        if p.is_symlink():  # a dangling link: its parent is where a write would fail
            break
        p = p.parent
    return p


def _refuse(flag: str, path: Path, problem: str) -> InputError:
    return InputError(f"{flag} {path}: {problem}")


def _probe(folder: Path, flag: str, target: Path) -> None:
    """Create and remove a temporary file in ``folder``: the only test of writability that root obeys."""
    try:
        with tempfile.TemporaryFile(prefix=".equinv-probe-", dir=folder):
            pass
    except OSError as e:
        raise _refuse(flag, target, f"cannot write in {folder} ({_reason(e)})") from None
    try:
        st = os.statvfs(folder)
    except OSError:
        return
    if st.f_bavail == 0 and st.f_blocks > 0:
        raise _refuse(flag, target, f"no space left on the device of {folder}")


def _check_folder(folder: Path, flag: str, target: Path) -> None:
    """``folder`` is, or can be created as, a folder one can write in."""
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        raise _refuse(flag, target, "exists and is not a folder" if anc == target.absolute() else
                      f"{anc} is not a folder")
    _probe(anc, flag, target)


def check_dir(path: str | Path, flag: str = "--out") -> Path:
    """Refuse an output folder that cannot be written (a file or device there, no permission, no space)."""
    path = Path(path)
    _check_folder(path, flag, path)
    return path


def check_file(path: str | Path, flag: str = "--out", *, force: bool | None = None,
               suffixes: tuple[str, ...] | None = None) -> Path:
    """Refuse an output file that cannot be written or must not be replaced.

    ``suffixes``: the accepted endings (lower case, with the dot). ``force``: ``None`` for a command that
    replaces its output as a matter of course, ``False`` to refuse an existing file (``--force`` replaces it).
    """
    path = Path(path)
    if suffixes is not None and path.suffix.lower() not in suffixes:
        raise _refuse(flag, path, f"must end in {', '.join(suffixes)}")
    if path.is_dir():
        raise _refuse(flag, path, "is a folder, not a file")
    if path.exists() or path.is_symlink():
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise _refuse(flag, path, _reason(e)) from None
        if not stat.S_ISREG(mode):
            raise _refuse(flag, path, "exists and is not a regular file")
        if force is False:
            raise _refuse(flag, path, "already exists (use --force to replace it)")
    _check_folder(path.parent, flag, path)
    return path


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed over ``path``, on failure removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_image(im, path: str | Path, **kwargs) -> Path:
    """Save a PIL image atomically, in the format its file suffix names (``.png``, ``.jpg``, ...)."""
    from PIL import Image

    path = Path(path)
    fmt = Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"unknown image file suffix {path.suffix!r} (use e.g. .png or .jpg)", path)
    with atomic_path(path) as tmp:
        im.save(tmp, format=fmt, **kwargs)
    return path


def os_error_message(e: OSError) -> str | None:
    """The one-line message of an ``OSError`` about a file; ``None`` when it is not one (a real bug)."""
    name = e.filename if isinstance(e.filename, str) else None
    if e.errno in WRITE_ERRNOS:
        return f"cannot write {name}: {_reason(e)}" if name else f"cannot write: {_reason(e)}"
    if e.errno in PATH_ERRNOS and name:
        return f"{name}: {_reason(e)}"
    return None
